#!/usr/bin/env bash
# Build helm-docs (generates charts/vibecraft/README.md from the `# --` comments in values.yaml) with Go,
# cached outside the clone by version.
set -euo pipefail
HELM_DOCS_VERSION="${HELM_DOCS_VERSION:-1.14.2}"
exec bash "$(dirname "$0")/go-install.sh" helm-docs "$HELM_DOCS_VERSION" \
  "github.com/norwoodj/helm-docs/cmd/helm-docs@v${HELM_DOCS_VERSION}" "-X main.version=${HELM_DOCS_VERSION}"
