#!/usr/bin/env bash
# go-install.sh NAME VERSION PACKAGE@VERSION [LDFLAGS]: build one Go tool through the module proxy,
# cached outside the clone under ~/.cache/vibecraft/NAME-vVERSION/bin, keyed by version.
set -euo pipefail
name="$1" version="$2" pkg="$3" ldflags="${4:-}"
CACHE="${VIBECRAFT_CACHE:-$HOME/.cache/vibecraft}/${name}-v${version}"
if [ -x "$CACHE/bin/$name" ]; then echo "$name v${version} cached in $CACHE/bin"; exit 0; fi
mkdir -p "$CACHE"
echo "building $name v${version} (a few minutes on 2 cores)..."
GOTOOLCHAIN="${GOTOOLCHAIN:-local}" GOBIN="$CACHE/bin" GOFLAGS="-buildvcs=false -trimpath" \
  go install -ldflags "-s -w ${ldflags}" "$pkg" \
  || { echo "error: building $name v${version} failed" >&2; exit 1; }
echo "$name v${version} built into $CACHE/bin"
