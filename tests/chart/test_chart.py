"""The Helm chart: lint, render for default/kind/EKS values, server-side dry run, and a real
install → MusicVideo renders end to end → upgrade → uninstall on the local cluster."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from vibecraft_localcluster.config import find_tool

from tests.conftest import VERSION, Cluster, S3Server
from tests.harness import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "vibecraft"
VALUES = ("default", "kind", "eks")
MONITORING = "monitoring.coreos.com/v1"


def helm(*args: str, kubeconfig: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = [find_tool("helm"), *args] + (["--kubeconfig", kubeconfig] if kubeconfig else [])
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if check and res.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{res.stdout}\n{res.stderr}")
    return res


def render(values: str, *extra: str) -> list[dict[str, Any]]:
    out = helm("template", "vc", str(CHART), "--kube-version", "1.37.2", "-n", "vibecraft-system",
               "-f", str(CHART / "ci" / f"{values}-values.yaml"), *extra).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.mark.parametrize("values", VALUES)
def test_lint_strict(values: str) -> None:
    res = helm("lint", "--strict", str(CHART), "-f", str(CHART / "ci" / f"{values}-values.yaml"))
    assert "0 chart(s) failed" in res.stdout


def test_bad_values_fail_with_a_message() -> None:
    res = helm("template", "vc", str(CHART), "--kube-version", "1.37.2", "--set", "operator.replicas=0",
               "--set", "s3.bucket=No_Such", check=False)
    assert res.returncode != 0
    assert "/operator/replicas" in res.stderr and "/s3/bucket" in res.stderr


def test_rendered_manifests_are_secure_and_wired() -> None:
    docs = render("eks")
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    deployments = {d["metadata"]["name"]: d for d in by_kind["Deployment"]}
    op = deployments["vc-vibecraft-operator"]["spec"]["template"]["spec"]
    assert "--peering=vc-vibecraft" in op["containers"][0]["args"]  # 2 replicas → leader election
    env = {e["name"]: e.get("value") for e in op["containers"][0]["env"]}
    assert env["VIBECRAFT_RENDERER_IMAGE"] == "123456789012.dkr.ecr.us-east-1.amazonaws.com/vibecraft/renderer:0.1.0"
    assert "AWS_ACCESS_KEY_ID" not in env  # IRSA, no static keys
    for dep in deployments.values():
        sc = dep["spec"]["template"]["spec"]["containers"][0]["securityContext"]
        assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"] and sc["capabilities"]["drop"] == ["ALL"]
    sas = {(s["metadata"]["namespace"], s["metadata"]["name"]) for s in by_kind["ServiceAccount"]}
    for ns in ("vibecraft-system", "vc-acme", "vc-globex"):
        assert (ns, "vibecraft-renderer") in sas
    api_role = next(r for r in by_kind["ClusterRole"] if r["metadata"]["name"].endswith("-api"))
    assert api_role["rules"] == [{"apiGroups": ["vibecraft.io"], "resources": ["musicvideos"],
                                  "verbs": ["create", "get", "list", "watch", "delete", "patch"]}]
    assert {d["kind"] for d in docs} >= {"ServiceMonitor", "PrometheusRule", "Ingress", "ConfigMap"}


def _memory_policy(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    (policy,) = [d for d in docs if d["kind"] == "ValidatingAdmissionPolicy" and d["metadata"]["name"].endswith("-memory")]
    (binding,) = [d for d in docs if d["kind"] == "ValidatingAdmissionPolicyBinding"
                  and d["metadata"]["name"].endswith("-memory")]
    return policy, binding


def test_the_default_max_memory_is_enforced_by_an_admission_policy() -> None:
    """The operator's ceiling without spec.resources.maxMemory is a chart value: the policy carries it."""
    policy, binding = _memory_policy(render("eks"))  # renderer.defaultMaxMemory: 12Gi
    assert binding["spec"] == {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"]}
    assert policy["spec"]["failurePolicy"] == "Fail"
    (rule,) = policy["spec"]["matchConstraints"]["resourceRules"]
    assert (rule["apiGroups"], rule["resources"], rule["operations"]) == (["vibecraft.io"], ["musicvideos"],
                                                                         ["CREATE", "UPDATE"])
    (check,) = policy["spec"]["validations"]
    assert "quantity('12Gi')" in check["expression"] and "above 12Gi" in check["messageExpression"]
    assert [c["name"] for c in policy["spec"]["matchConditions"]] == ["spec-written"]  # every namespace
    scoped, _ = _memory_policy(render("default", "--set", "operator.watchNamespaces={renders,vc-*,!kube-?}"))
    assert scoped["spec"]["matchConditions"][1] == {"name": "watched-namespace", "expression": (
        "request.namespace.matches(r'^(?:renders)$') || request.namespace.matches(r'^(?:vc-.*)$') || "
        "!request.namespace.matches(r'^(?:kube-.)$')")}


def test_chart_crd_matches_crds_dir() -> None:
    assert (CHART / "crds" / "musicvideo.yaml").read_text() == (ROOT / "crds" / "musicvideo.yaml").read_text(), \
        "charts/vibecraft/crds/musicvideo.yaml is a copy of crds/musicvideo.yaml: copy it again"


SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}


def _exported_metrics() -> set[str]:
    """Every series name the operator's and the API's code can export."""
    import vibecraft_operator.metrics  # noqa: F401  (registers the operator's metrics)
    from prometheus_client import REGISTRY
    from vibecraft_api.metrics import Metrics

    names: set[str] = set()
    for registry in (REGISTRY, Metrics().registry):
        for metric in registry.collect():
            names.add(metric.name)
            names.update(metric.name + s for s in SUFFIXES.get(metric.type, ()))
    return names


def _referenced_metrics(text: str) -> set[str]:
    return set(re.findall(r"\bvibecraft_[a-z_]+", text))


def test_dashboard_and_alerts_use_only_exported_metrics() -> None:
    dashboard = json.loads((CHART / "dashboards" / "vibecraft.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    rules = (CHART / "rules" / "vibecraft-rules.yaml").read_text()
    exported = _exported_metrics()
    for where, text in (("dashboard", exprs), ("alert rules", rules)):
        missing = _referenced_metrics(text) - exported
        assert not missing, f"{where} reference metrics nobody exports: {sorted(missing)}"
    assert len(dashboard["panels"]) >= 8


def test_prometheus_rules_pass_promtool(tmp_path: Path) -> None:
    promtool = Path(find_tool("promtool"))
    if not promtool.exists():
        pytest.skip("promtool not built (localcluster/build-promtool.sh)")
    rule = next(d for d in render("eks") if d["kind"] == "PrometheusRule")
    f = tmp_path / "rules.yaml"
    f.write_text(yaml.safe_dump(rule["spec"]))
    res = subprocess.run([str(promtool), "check", "rules", str(f)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("values", VALUES)
def test_server_side_dry_run(cluster: Cluster, values: str) -> None:
    # Tenant namespaces of this test's own (a dry run cannot create the namespaces the rest goes into,
    # and the session's cluster is shared: a real `vc-demo` would block a later release's tenant).
    prefix = f"dry{uuid.uuid4().hex[:5]}-"
    docs = [d for d in render(values, "--set", f"api.namespacePrefix={prefix}")
            if d["apiVersion"] != MONITORING]  # no prometheus-operator CRDs here
    cluster.kubectl("apply", "--server-side", "-f", str(CHART / "crds"))
    tenants = [d for d in docs if d["kind"] == "Namespace"]
    namespaces = [*tenants, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "vibecraft-system"}}]
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(namespaces))
    try:
        rest = [d for d in docs if d["kind"] != "Namespace"]
        res = cluster.kubectl("apply", "--server-side", "--dry-run=server", "--force-conflicts", "-f", "-",
                              input=yaml.safe_dump_all(rest), check=False)
        assert res.returncode == 0, res.stderr
    finally:
        if tenants:
            cluster.kubectl("delete", "namespace", *(d["metadata"]["name"] for d in tenants), "--wait=false",
                            check=False)


def _why(cluster: Cluster, ns: str, release: str) -> str:
    """What a failed `helm --wait` prints: the pods described, the node, and the release's pod logs."""
    if cluster.real:
        logs = cluster.kubectl("logs", "-n", ns, "-l", f"app.kubernetes.io/instance={release}", "--all-containers",
                               "--prefix", "--tail=30", check=False).stdout
    else:
        logs = "".join(f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}"
                       for p in (cluster.state_dir / "pod-logs").glob(f"{ns}_*"))
    return f"{cluster.diagnose(ns)}\n{logs}"


def test_install_render_upgrade_uninstall(cluster: Cluster, s3: S3Server, tmp_path: Path) -> None:
    release, ns = f"vc{uuid.uuid4().hex[:5]}", f"vc-sys-{uuid.uuid4().hex[:5]}"
    render_ns = f"renders-{uuid.uuid4().hex[:5]}"
    cluster.kubectl("create", "namespace", render_ns)
    values = {
        "s3": {"endpoint": s3.endpoint, "bucket": s3.bucket, "region": s3.region,
               "credentials": {"accessKeyId": s3.access_key, "secretAccessKey": s3.secret_key}},
        "operator": {"metricsPort": free_port(), "healthPort": free_port(), "maxRunning": 2,
                     "watchNamespaces": [render_ns]},
        "renderer": {"namespaces": [render_ns]},
        "api": {"port": free_port()},
    }
    if cluster.real:  # the images build-images.sh built and the real node imported
        values["image"] = {"registry": "localhost/", "tag": VERSION}
    vf = tmp_path / "values.json"
    vf.write_text(json.dumps(values))
    kc = cluster.kubeconfig
    # As NOTES.txt says: the API is Ready (and `--wait` returns) once its key Secret holds a key.
    cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("create", "secret", "generic", "vibecraft-api-keys", "-n", ns,
                    f"--from-literal=t1=sha256:{hashlib.sha256(b'a key').hexdigest()}")
    res = helm("install", release, str(CHART), "-n", ns, "-f", str(vf), "--wait", "--timeout",
               "5m", kubeconfig=kc, check=False)
    if res.returncode != 0:
        raise AssertionError(f"helm install failed: {res.stderr}\n{_why(cluster, ns, release)}")
    try:
        song = tmp_path / "song.wav"
        subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=f=440:d=6", "-af",
                        "volume='if(lt(mod(t,0.5),0.1),1,0.1)':eval=frame", str(song)], check=True)
        key = f"songs/{release}.wav"
        s3.client().upload_file(str(song), s3.bucket, key)
        mv = {"apiVersion": "vibecraft.io/v1alpha1", "kind": "MusicVideo", "metadata": {"name": "hello"},
              "spec": {"audio": {"url": f"s3://{s3.bucket}/{key}"}, "output": {"url": f"s3://{s3.bucket}/{release}/"},
                       "video": {"width": 160, "height": 90, "fps": 10, "preset": "ultrafast"},
                       "resources": {"memory": "768Mi", "maxMemory": "2Gi"}}}
        cluster.kubectl("apply", "-n", render_ns, "-f", "-", input=json.dumps(mv))

        def phase() -> str | None:
            st = json.loads(cluster.kubectl("get", "mv", "hello", "-n", render_ns, "-o", "json").stdout).get("status", {})
            return st.get("phase") if st.get("phase") in ("Succeeded", "Failed") else None

        assert wait_for(phase, timeout=600, interval=1, what="the render to finish") == "Succeeded"
        head = s3.client().head_object(Bucket=s3.bucket, Key=f"{release}/video.mp4")
        assert head["ContentLength"] > 1000

        res = helm("upgrade", release, str(CHART), "-n", ns, "-f", str(vf), "--set", "operator.maxRunning=3",
                   "--wait", "--timeout", "3m", kubeconfig=kc, check=False)
        assert res.returncode == 0, f"helm upgrade failed: {res.stderr}\n{_why(cluster, ns, release)}"
        dep = json.loads(cluster.kubectl("get", "deploy", "-n", ns, "-o", "json").stdout)["items"]
        op = next(d for d in dep if d["metadata"]["name"].endswith("-operator"))
        env = {e["name"]: e.get("value") for e in op["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["VIBECRAFT_MAX_RUNNING"] == "3"
    finally:
        helm("uninstall", release, "-n", ns, "--wait", kubeconfig=kc, check=False)
    left = json.loads(cluster.kubectl("get", "deploy,pods", "-n", ns, "-o", "json").stdout)["items"]
    assert wait_for(lambda: not json.loads(cluster.kubectl("get", "deploy,pods", "-n", ns, "-o", "json").stdout)["items"],
                    timeout=90, interval=1, what=f"uninstall to remove {[i['metadata']['name'] for i in left]}")
    cluster.kubectl("delete", "namespace", ns, render_ns, "--wait=false", check=False)


def test_memory_above_the_default_max_is_refused_at_apply(cluster: Cluster, tmp_path: Path) -> None:
    """Without spec.resources.maxMemory, a resources.memory the operator would refuse (InvalidSpec) is
    refused by the API server at `kubectl apply`, with the installation's number in the message."""
    release, ns = f"vc{uuid.uuid4().hex[:5]}", f"vc-sys-{uuid.uuid4().hex[:5]}"
    render_ns, other_ns = f"renders-{uuid.uuid4().hex[:5]}", f"other-{uuid.uuid4().hex[:5]}"
    for name in (render_ns, other_ns):
        cluster.kubectl("create", "namespace", name)
    values = {"s3": {"existingSecret": ""}, "api": {"enabled": False},
              "operator": {"metricsPort": free_port(), "healthPort": free_port(), "watchNamespaces": [render_ns]},
              "renderer": {"namespaces": [render_ns], "defaultMaxMemory": "8Gi"}}
    vf = tmp_path / "values.json"
    vf.write_text(json.dumps(values))
    kc = cluster.kubeconfig

    def apply(namespace: str, resources: dict[str, str]) -> subprocess.CompletedProcess[str]:
        mv = {"apiVersion": "vibecraft.io/v1alpha1", "kind": "MusicVideo", "metadata": {"name": "big"},
              "spec": {"audio": {"url": "s3://vibecraft/songs/a.ogg"}, "output": {"url": "s3://vibecraft/videos/a/"},
                       "resources": resources}}
        return cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=json.dumps(mv),
                               check=False)

    try:
        helm("install", release, str(CHART), "-n", ns, "--create-namespace", "-f", str(vf), kubeconfig=kc)
        # The API server picks a new policy up within a second or so.
        refused = wait_for(lambda: (res := apply(render_ns, {"memory": "16Gi"})).returncode != 0 and res,
                           timeout=30, interval=0.5, what="the admission policy to refuse 16Gi")
        assert "spec.resources.memory 16Gi is above 8Gi, the maxMemory this installation allows when " \
               "spec.resources.maxMemory is unset: ask for at most 8Gi, or set spec.resources.maxMemory" \
               in " ".join(refused.stderr.split()), refused.stderr
        for namespace, resources in ((render_ns, {"memory": "16Gi", "maxMemory": "32Gi"}), (render_ns, {"memory": "8Gi"}),
                                     (render_ns, {"cpu": "2"}), (other_ns, {"memory": "16Gi"})):  # other_ns: not watched
            res = apply(namespace, resources)
            assert res.returncode == 0, (namespace, resources, res.stderr)
    finally:
        helm("uninstall", release, "-n", ns, kubeconfig=kc, check=False)
        cluster.kubectl("delete", "namespace", ns, render_ns, other_ns, "--wait=false", check=False)


def test_chart_readme_documents_every_value() -> None:
    """charts/vibecraft/README.md is exactly what helm-docs renders from README.md.gotmpl and the
    `# --` comments in values.yaml, and no value in its table lacks a description."""
    from vibecraft_localcluster.config import cache_root

    build = (ROOT / "localcluster" / "build-helm-docs.sh").read_text()
    version = re.search(r"HELM_DOCS_VERSION:-([\w.-]+)", build)
    assert version, "no default HELM_DOCS_VERSION in localcluster/build-helm-docs.sh"
    helm_docs = cache_root() / f"helm-docs-v{version.group(1)}" / "bin" / "helm-docs"
    assert helm_docs.exists(), f"{helm_docs} missing: run make bootstrap (localcluster/build-helm-docs.sh)"
    # helm-docs skips a chart it cannot parse with a warning and exit 0: the comparison catches that too.
    res = subprocess.run([str(helm_docs), "--chart-search-root", "charts", "--dry-run", "--log-level", "warning"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    readme = (CHART / "README.md").read_text()
    assert res.stdout == readme, f"charts/vibecraft/README.md is stale: run {helm_docs} -c charts\n{res.stderr}"
    rows = re.findall(r"^\| (\S+) \| (\w+) \| `.*` \| (.*) \|$", readme, re.M)
    undocumented = [key for key, _, description in rows if not description.strip()]
    assert not undocumented, f"values without a `# --` comment in values.yaml: {undocumented}"
    for key in ("operator.maxRunning", "renderer.defaultMaxMemory", "api.tenants", "metrics.prometheusRule.enabled"):
        assert key in {k for k, _, _ in rows}


def test_the_documented_offline_render_works() -> None:
    """`helm template` without a cluster assumes Kubernetes v1.20, which the chart's kubeVersion refuses; the
    chart README says how to render offline, and that command renders every object."""
    readme = (CHART / "README.md").read_text()
    documented = re.search(r"^helm template (.*?)(?: -f my-values\.yaml)?$", readme, re.M)
    assert documented, "the chart README shows the offline `helm template` command"
    args = documented.group(1).split()
    assert "--kube-version" in args
    plain = helm("template", "t", str(CHART), check=False)
    assert plain.returncode != 0 and "kubeVersion" in plain.stderr  # why the README needs to say it
    out = helm("template", *[str(CHART) if a == "charts/vibecraft" else a for a in args])
    kinds = {d["kind"] for d in yaml.safe_load_all(out.stdout) if d}
    assert {"Deployment", "Service", "ValidatingAdmissionPolicy", "ClusterRole"} <= kinds, kinds


def test_a_tenant_namespace_gets_its_own_storage_identity() -> None:
    """s3.namespaceCredentials and renderer.serviceAccount.namespaceAnnotations (IRSA) reach only their
    namespace; the others keep the bucket-wide key and the common annotations (docs/security.md)."""
    docs = render("default", "--set", "api.tenants={alice,bob}", "--set", "s3.credentials.accessKeyId=ADMIN",
                  "--set", "s3.credentials.secretAccessKey=S", "--set", "renderer.serviceAccount.annotations.team=all",
                  "--set-json", 's3.namespaceCredentials={"vc-alice":{"accessKeyId":"A","secretAccessKey":"AS"}}',
                  "--set-json", 'renderer.serviceAccount.namespaceAnnotations={"vc-alice":{"eks.amazonaws.com/role-arn":'
                                '"arn:aws:iam::1:role/alice"}}')
    keys = {d["metadata"]["namespace"]: d["stringData"]["AWS_ACCESS_KEY_ID"] for d in docs
            if d["kind"] == "Secret" and d["metadata"]["name"] == "vibecraft-s3"}
    assert keys == {"vibecraft-system": "ADMIN", "vc-alice": "A", "vc-bob": "ADMIN"}
    accounts = {d["metadata"]["namespace"]: d["metadata"].get("annotations") for d in docs
                if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == "vibecraft-renderer"}
    assert accounts["vc-alice"] == {"team": "all", "eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/alice"}
    assert accounts["vc-bob"] == {"team": "all"}


def test_renderer_network_policy_selects_render_pods_and_keeps_them_off_private_networks() -> None:
    """renderer.networkPolicy: one per render namespace, matching the pods the operator's Jobs make; no
    ingress; egress to DNS, public addresses, the egress allow-list and the extra rules only."""
    from vibecraft_operator.jobs import build_job

    from tests.operator.operator_factories import musicvideo, settings

    extra = '{"to":[{"ipBlock":{"cidr":"172.18.0.2/32"}}],"ports":[{"port":6443}]}'
    docs = render("default", "--set", "renderer.networkPolicy.enabled=true", "--set", "renderer.namespaces={team-a}",
                  "--set", "renderer.egressAllowCidrs={10.20.0.0/16}",
                  "--set-json", f"renderer.networkPolicy.extraEgress=[{extra}]")
    policies = {d["metadata"]["namespace"]: d["spec"] for d in docs if d["kind"] == "NetworkPolicy"}
    assert set(policies) == {"vibecraft-system", "team-a"}
    spec = policies["team-a"]
    pod_labels = build_job(musicvideo(), attempt=1, memory="1Gi", cpu="1", deadline_seconds=60,
                           settings=settings())["spec"]["template"]["metadata"]["labels"]
    assert spec["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert spec["policyTypes"] == ["Ingress", "Egress"] and spec["ingress"] == []
    dns, public, allowed = spec["egress"]
    assert {p["port"] for p in dns["ports"]} == {53}
    v4, v6, *rest = public["to"]
    assert v4["ipBlock"]["cidr"] == "0.0.0.0/0" and {"10.0.0.0/8", "169.254.0.0/16", "100.64.0.0/10", "127.0.0.0/8",
                                                      "172.16.0.0/12", "192.168.0.0/16"} <= set(v4["ipBlock"]["except"])
    assert v6["ipBlock"]["cidr"] == "::/0" and {"fc00::/7", "fe80::/10", "::1/128"} <= set(v6["ipBlock"]["except"])
    assert rest == [{"ipBlock": {"cidr": "10.20.0.0/16"}}] and allowed == json.loads(extra)
    assert not [d for d in render("default") if d["kind"] == "NetworkPolicy"]  # off unless asked for


def test_the_ingress_routes_only_the_api_not_metrics_or_probes() -> None:
    (ingress,) = [d for d in render("default", "--set", "api.ingress.enabled=true") if d["kind"] == "Ingress"]
    paths = [(p["path"], p["pathType"]) for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    assert paths == [("/v1", "Prefix")]  # a Prefix match is by path element: /v1x, /metrics, /readyz stay out


def test_each_tenant_namespace_gets_a_resource_quota() -> None:
    docs = render("default", "--set", "api.tenants={alice,bob}")
    quotas = {d["metadata"]["namespace"]: d["spec"]["hard"] for d in docs if d["kind"] == "ResourceQuota"}
    assert set(quotas) == {"vc-alice", "vc-bob"} and quotas["vc-alice"]["count/musicvideos.vibecraft.io"] == "1000"
    assert not [d for d in render("default", "--set", "api.tenants={alice}", "--set", "api.tenantQuota=null")
                if d["kind"] == "ResourceQuota"]


def _env(docs: list[dict[str, Any]], component: str) -> dict[str, str]:
    (deploy,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith(f"-{component}")]
    return {e["name"]: e.get("value") for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_finished_video_ttl_and_the_upload_sweeper_reach_their_settings() -> None:
    """The values reach the settings the components read (names from their Settings classes)."""
    from vibecraft_api.settings import Settings as ApiSettings
    from vibecraft_operator.settings import Settings as OperatorSettings

    default = render("default")
    assert "VIBECRAFT_TTL_SECONDS_AFTER_FINISHED" not in _env(default, "operator")  # unset: kept forever
    api = _env(default, "api")
    swept = ApiSettings.model_validate({k.removeprefix("VIBECRAFT_API_").lower(): v for k, v in api.items()
                                        if k.removeprefix("VIBECRAFT_API_").lower() in ApiSettings.model_fields})
    assert (swept.upload_retention_seconds, swept.incomplete_upload_max_age_seconds, swept.sweep_interval_seconds) == \
        (604800, 86400, 3600.0)
    ttl = _env(render("default", "--set", "operator.ttlSecondsAfterFinished=86400",
                      "--set", "api.sweepIntervalSeconds=0"), "operator")
    assert OperatorSettings.model_validate({"ttl_seconds_after_finished": ttl["VIBECRAFT_TTL_SECONDS_AFTER_FINISHED"]}
                                           ).ttl_seconds_after_finished == 86400
    res = helm("template", "vc", str(CHART), "--set", "operator.ttlSecondsAfterFinished=-1", check=False)
    assert res.returncode != 0 and "ttlSecondsAfterFinished" in res.stderr
