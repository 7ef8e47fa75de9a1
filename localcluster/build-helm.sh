#!/usr/bin/env bash
# Build helm with Go through the module proxy, cached outside the clone keyed by version.
set -euo pipefail
HELM_VERSION="${HELM_VERSION:-3.22.0}"
CACHE="${VIBECRAFT_CACHE:-$HOME/.cache/vibecraft}/helm-v${HELM_VERSION}"
if [ -x "$CACHE/bin/helm" ]; then echo "helm v${HELM_VERSION} cached in $CACHE/bin"; exit 0; fi
mkdir -p "$CACHE"
echo "building helm v${HELM_VERSION} (a few minutes on 2 cores)..."
GOTOOLCHAIN="${GOTOOLCHAIN:-local}" GOBIN="$CACHE/bin" GOFLAGS="-buildvcs=false -trimpath" \
  go install -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=v${HELM_VERSION}" "helm.sh/helm/v3/cmd/helm@v${HELM_VERSION}" \
  || { echo "error: building helm v${HELM_VERSION} failed" >&2; exit 1; }
echo "helm v${HELM_VERSION} built into $CACHE/bin"
