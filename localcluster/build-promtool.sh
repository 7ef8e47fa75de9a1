#!/usr/bin/env bash
# Build promtool (checks the chart's Prometheus rules) with Go, cached outside the clone by version.
set -euo pipefail
PROM_VERSION="${PROM_VERSION:-0.316.0}"
exec bash "$(dirname "$0")/go-install.sh" promtool "$PROM_VERSION" \
  "github.com/prometheus/prometheus/cmd/promtool@v${PROM_VERSION}"
