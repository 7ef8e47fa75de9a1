#!/usr/bin/env bash
# make demo: cluster + S3 + helm install + a MusicVideo for a sample song → ./out/demo.mp4
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m vibecraft_localcluster.demo "$@"
