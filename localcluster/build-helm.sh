#!/usr/bin/env bash
# Build helm with Go through the module proxy, cached outside the clone keyed by version.
set -euo pipefail
HELM_VERSION="${HELM_VERSION:-3.22.0}"
exec bash "$(dirname "$0")/go-install.sh" helm "$HELM_VERSION" "helm.sh/helm/v3/cmd/helm@v${HELM_VERSION}" \
  "-X helm.sh/helm/v3/internal/version.version=v${HELM_VERSION}"
