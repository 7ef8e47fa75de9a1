#!/usr/bin/env bash
# Build what a real node needs, cached outside the clone keyed by version (like build-k8s.sh):
#   kubelet and kube-proxy from the k8s.io/kubernetes module (same go.mod as the control plane), and
#   the pause image (the pod sandbox) compiled from the module's build/pause/linux/pause.c, saved as an
#   OCI archive that containerd imports (no registry is reachable here, so registry.k8s.io/pause is not).
set -euo pipefail
cd "$(dirname "$0")/.."
K8S_VERSION="${K8S_VERSION:-1.37.2}"
PAUSE_VERSION="3.10"
CACHE="${VIBECRAFT_CACHE:-$HOME/.cache/vibecraft}/k8s-v${K8S_VERSION}"
BINS=(kubelet kube-proxy)

bash localcluster/build-k8s.sh >/dev/null  # the module's go.mod and sources
have_all() { for b in "${BINS[@]}"; do [ -x "$CACHE/bin/$b" ] || return 1; done; [ -f "$CACHE/pause-$PAUSE_VERSION.tar" ]; }
if have_all; then echo "kubelet, kube-proxy and pause v${K8S_VERSION} cached in $CACHE"; exit 0; fi

export GOFLAGS="${GOFLAGS:-} -mod=mod" GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
minor="${K8S_VERSION#1.}"; minor="${minor%%.*}"
node_src="$CACHE/node-src"
mkdir -p "$node_src"
cp "$CACHE/src/go.mod" "$CACHE/src/go.sum" "$node_src/"
cat > "$node_src/tools.go" <<'GO'
//go:build tools

package k8sbuild

import (
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
GO
cd "$node_src"
if [ ! -x "$CACHE/bin/kubelet" ] || [ ! -x "$CACHE/bin/kube-proxy" ]; then
  echo "compiling kubelet and kube-proxy v${K8S_VERSION} (~2 min after the control plane, ~8 min alone)..."
  go mod tidy -e >/dev/null 2>tidy.log || { tail -20 tidy.log; echo "error: go mod tidy failed" >&2; exit 1; }
  out="$CACHE/bin/.node.$$"; rm -rf "$out"; mkdir -p "$out"
  go build -trimpath -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=v${K8S_VERSION} -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${minor}" \
    -o "$out/" k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy \
    || { rm -rf "$out"; echo "error: building kubelet/kube-proxy failed" >&2; exit 1; }
  for b in "${BINS[@]}"; do mv "$out/$b" "$CACHE/bin/$b"; done
  rm -rf "$out"
fi

if [ ! -f "$CACHE/pause-$PAUSE_VERSION.tar" ]; then
  echo "building the pause image $PAUSE_VERSION from the module's pause.c..."
  src="$(go env GOMODCACHE)/k8s.io/kubernetes@v${K8S_VERSION}/build/pause/linux/pause.c"
  work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
  gcc -Os -static -DVERSION="$PAUSE_VERSION" -o "$work/pause" "$src"
  c="$(buildah from scratch)"
  buildah copy "$c" "$work/pause" /pause >/dev/null
  buildah config --entrypoint '["/pause"]' --user 65535:65535 "$c"
  buildah commit -q "$c" "localhost/pause:$PAUSE_VERSION" >/dev/null
  buildah rm "$c" >/dev/null
  podman save -q --format oci-archive -o "$work/pause.tar" "localhost/pause:$PAUSE_VERSION"
  mv "$work/pause.tar" "$CACHE/pause-$PAUSE_VERSION.tar"
fi
echo "kubelet, kube-proxy and pause v${K8S_VERSION} built into $CACHE"
