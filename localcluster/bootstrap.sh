#!/usr/bin/env bash
# Install everything `make test` and `make demo` need on a fresh Debian machine: apt packages,
# the Python venv (.venv in the clone; pip's cache makes re-runs quick) and the Go-built
# binaries (cached outside the clone under ~/.cache/vibecraft/<tool>-<version>/).
set -euo pipefail
cd "$(dirname "$0")/.."
# `bootstrap.sh demo` installs only what `make demo` needs (no promtool, no helm-docs: they serve the tests).
WHAT="${1:-all}"
steps=5; [ "$WHAT" = demo ] && steps=3
n=0
step() { n=$((n + 1)); echo "[bootstrap $n/$steps] $*"; }

APT_PACKAGES=(ffmpeg libsndfile1 openssl util-linux hyperrogue-music fluidsynth fluid-soundfont-gm)
missing=()
for p in "${APT_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "[bootstrap] apt-get install ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "[bootstrap] creating .venv"
  "$PY" -m venv .venv
fi
stamp=".venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "[bootstrap] pip install -e .[dev]"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e ".[dev]"
  touch "$stamp"
fi

# Compile librosa's numba kernels once (as Dockerfile.renderer does at build time); render pods reuse it.
# Built in a scratch dir and swapped in whole, so an interrupted warm-up never leaves a corrupt cache.
# One cache per checkout (numba keys entries by source path): see vibecraft_localcluster.images.numba_cache.
cache="$(.venv/bin/python -c 'from vibecraft_localcluster.images import numba_cache; print(numba_cache())')"
if [ ! -f "$cache/.warm-$(sha1sum pyproject.toml | cut -c1-12)" ]; then
  echo "[bootstrap] compiling librosa's numba kernels into $cache"
  mkdir -p "$(dirname "$cache")"
  tmp="$cache.tmp.$$"; rm -rf "$tmp"; mkdir -p "$tmp"
  if NUMBA_CACHE_DIR="$tmp" .venv/bin/vibecraft-render --warmup >/dev/null 2>&1; then
    touch "$tmp/.warm-$(sha1sum pyproject.toml | cut -c1-12)"
    rm -rf "$cache.old"; [ -d "$cache" ] && mv "$cache" "$cache.old"; mv "$tmp" "$cache"; rm -rf "$cache.old"
  else
    rm -rf "$tmp"; echo "[bootstrap] warning: numba warm-up failed; renders will compile on first use" >&2
  fi
fi

# Go tools share one build cache (Go's default, ~/.cache/go-build) and module cache; each is cached by
# version, so only a first run builds. Estimates are for 2 cores with an empty Go cache.
step "apt packages, .venv, numba kernels: done"
step "kube-apiserver, kube-controller-manager, kube-scheduler v1.37 (first time ~15 min: ~1 GB of sources, then compiling)"
bash localcluster/build-k8s.sh
step "helm (first time ~3 min)"
bash localcluster/build-helm.sh
if [ "$WHAT" != demo ]; then
  step "promtool, helm-docs for the tests (first time ~4 min)"
  bash localcluster/build-promtool.sh
  bash localcluster/build-helm-docs.sh
  step "ready"
fi
echo "[bootstrap] ready ($WHAT)"
