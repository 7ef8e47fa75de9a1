#!/usr/bin/env bash
# Install everything `make test` and `make demo` need on a fresh Debian machine: apt packages,
# the Python venv (.venv in the clone; pip's cache makes re-runs quick) and the Go-built
# binaries (cached outside the clone under ~/.cache/vibecraft/<tool>-<version>/).
set -euo pipefail
cd "$(dirname "$0")/.."
# `bootstrap.sh demo` installs only what `make demo` needs (no promtool, no helm-docs: they serve the tests).
# Both build the real node (kubelet, kube-proxy, pause; containerd + runc from Debian) and the images.
WHAT="${1:-all}"
steps=4
n=0
step() { n=$((n + 1)); echo "[bootstrap $n/$steps] $*"; }

# The Go-built binaries (mostly compiling, both cores) start first and build in the background while
# apt, pip and the numba warm-up (mostly downloading) run: a first run overlaps the two. They share one
# Go build cache and module cache (Go's defaults); each binary is cached by version, so only a first
# run builds. Their output lines are prefixed "[go]".
go_status="$(mktemp)"
go_builds() {
  bash localcluster/build-k8s.sh && bash localcluster/build-helm.sh && bash localcluster/build-node.sh || return 1
  if [ "$WHAT" != demo ]; then
    bash localcluster/build-promtool.sh && bash localcluster/build-helm-docs.sh && bash localcluster/build-kueue.sh || return 1
  fi
}
if [ "$WHAT" = demo ]; then
  step "Go builds in the background: the k8s v1.37 control plane and node (kubelet, kube-proxy, pause) and helm (first time ~20 min on 2 cores)"
else
  step "Go builds in the background: the k8s v1.37 control plane and node (kubelet, kube-proxy, pause), helm, promtool, helm-docs, Kueue (first time ~30 min on 2 cores)"
fi
( go_builds; echo $? > "$go_status" ) 2>&1 | sed -u 's/^/[go] /' &
go_pid=$!
trap 'kill $go_pid 2>/dev/null || true' INT TERM

step "apt packages, .venv, librosa's numba kernels, container images (first time ~5 min, then the images ~25 min beside the Go builds)"
APT_PACKAGES=(ffmpeg libsndfile1 openssl util-linux hyperrogue-music fluidsynth fluid-soundfont-gm tesseract-ocr tesseract-ocr-eng)
# The real node and the image builds (make demo, tests/realnode, tests/images): containerd + runc + CNI
# plugins, podman/buildah/mmdebstrap for the images, gcc for the pause binary, iptables/conntrack for kube-proxy.
APT_PACKAGES+=(containerd runc containernetworking-plugins iptables conntrack podman buildah mmdebstrap gcc libc6-dev)
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

echo "[bootstrap] container images from the Dockerfiles (first time ~25 min on 2 cores beside the Go builds, most of it ffmpeg; then seconds)"
bash localcluster/build-images.sh

step "waiting for the Go builds"
start=$(date +%s)
while kill -0 "$go_pid" 2>/dev/null; do
  sleep 5
  waited=$(( $(date +%s) - start ))
  if [ $((waited % 120)) -lt 5 ] && [ "$waited" -ge 120 ]; then echo "[bootstrap] still building Go binaries ($((waited / 60)) min of waiting so far)"; fi
done
wait "$go_pid" || true
rc="$(cat "$go_status" 2>/dev/null || echo 1)"; rm -f "$go_status"
if [ "$rc" != 0 ]; then echo "error: a Go build failed (see the [go] lines above)" >&2; exit 1; fi
step "ready ($WHAT)"
