{{- define "vibecraft.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}{{- else -}}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "vibecraft.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/name: vibecraft
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "vibecraft.selectorLabels" -}}
app.kubernetes.io/name: vibecraft
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "vibecraft.image" -}}
{{- $root := index . 0 -}}{{- $repo := index . 1 -}}
{{- printf "%s%s:%s" $root.Values.image.registry $repo (default $root.Chart.AppVersion $root.Values.image.tag) -}}
{{- end -}}

{{/* Namespaces where renders run: release namespace, renderer.namespaces and API tenant namespaces. */}}
{{- define "vibecraft.renderNamespaces" -}}
{{- $ns := list .Release.Namespace -}}
{{- range .Values.renderer.namespaces }}{{ $ns = append $ns . }}{{ end -}}
{{- if .Values.api.enabled }}{{ range .Values.api.tenants }}{{ $ns = append $ns (printf "%s%s" $.Values.api.namespacePrefix .) }}{{ end }}{{ end -}}
{{- $ns | uniq | join "," -}}
{{- end -}}

{{- define "vibecraft.s3Env" -}}
{{- if .Values.s3.existingSecret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom: {secretKeyRef: {name: {{ .Values.s3.existingSecret }}, key: AWS_ACCESS_KEY_ID}}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom: {secretKeyRef: {name: {{ .Values.s3.existingSecret }}, key: AWS_SECRET_ACCESS_KEY}}
{{- end }}
- name: AWS_REGION
  value: {{ .Values.s3.region | quote }}
{{- if .Values.s3.endpoint }}
- name: AWS_ENDPOINT_URL
  value: {{ .Values.s3.endpoint | quote }}
{{- end }}
{{- end -}}

{{/* CEL: whether request.namespace matches any of the given kopf namespace patterns (globs with * and ?;
a leading ! matches every namespace but those), as the operator's VIBECRAFT_NAMESPACES does. */}}
{{- define "vibecraft.namespaceMatchCEL" -}}
{{- $terms := list -}}
{{- range . -}}
{{- $glob := trimPrefix "!" . | trim -}}
{{- $re := regexQuoteMeta $glob | replace "\\*" ".*" | replace "\\?" "." -}}
{{- $term := printf "request.namespace.matches(r'^(?:%s)$')" $re -}}
{{- $terms = append $terms (ternary (printf "!%s" $term) $term (hasPrefix "!" .)) -}}
{{- end -}}
{{- join " || " $terms -}}
{{- end -}}
