#!/usr/bin/env bash
# Build promtool (checks the chart's Prometheus rules) with Go, cached outside the clone by version.
set -euo pipefail
PROM_VERSION="${PROM_VERSION:-0.316.0}"
CACHE="${VIBECRAFT_CACHE:-$HOME/.cache/vibecraft}/promtool-v${PROM_VERSION}"
if [ -x "$CACHE/bin/promtool" ]; then echo "promtool v${PROM_VERSION} cached in $CACHE/bin"; exit 0; fi
mkdir -p "$CACHE"
echo "building promtool (prometheus module v${PROM_VERSION}; a few minutes on 2 cores)..."
GOTOOLCHAIN="${GOTOOLCHAIN:-local}" GOBIN="$CACHE/bin" GOFLAGS="-buildvcs=false -trimpath" \
  go install -ldflags "-s -w" "github.com/prometheus/prometheus/cmd/promtool@v${PROM_VERSION}" \
  || { echo "error: building promtool v${PROM_VERSION} failed" >&2; exit 1; }
echo "promtool built into $CACHE/bin"
