#!/usr/bin/env bash
# Build the Kueue controller manager (sigs.k8s.io/kueue, a Go module) for the tests of the operator's Kueue
# mode, and keep its CRDs beside it; cached outside the clone by version.
set -euo pipefail
KUEUE_VERSION="${KUEUE_VERSION:-0.17.0}"
CACHE="${VIBECRAFT_CACHE:-$HOME/.cache/vibecraft}/kueue-v${KUEUE_VERSION}"
bash "$(dirname "$0")/go-install.sh" kueue "$KUEUE_VERSION" "sigs.k8s.io/kueue/cmd/kueue@v${KUEUE_VERSION}"
if [ ! -s "$CACHE/crds/kueue.x-k8s.io_workloads.yaml" ]; then
  src="$(GOTOOLCHAIN="${GOTOOLCHAIN:-local}" GOFLAGS=-mod=mod go mod download -json "sigs.k8s.io/kueue@v${KUEUE_VERSION}" \
    | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')"
  [ -d "$src/config/components/crd/bases" ] || { echo "error: Kueue v${KUEUE_VERSION}'s CRDs not found (module at '$src')" >&2; exit 1; }
  mkdir -p "$CACHE/crds"
  cp "$src"/config/components/crd/bases/*.yaml "$CACHE/crds/"
  echo "Kueue v${KUEUE_VERSION} CRDs copied to $CACHE/crds"
fi
