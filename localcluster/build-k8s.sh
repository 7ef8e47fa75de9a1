#!/usr/bin/env bash
# Build kube-apiserver, kube-controller-manager and kube-scheduler from the
# k8s.io/kubernetes Go module (through the Go module proxy) and cache them
# outside the clone, keyed by version, so CI's fresh clones reuse them.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-1.37.2}"
CACHE="${VIBECRAFT_CACHE:-$HOME/.cache/vibecraft}/k8s-v${K8S_VERSION}"
BINS=(kube-apiserver kube-controller-manager kube-scheduler)

have_all() { for b in "${BINS[@]}"; do [ -x "$CACHE/bin/$b" ] || return 1; done; }
if have_all; then echo "k8s v${K8S_VERSION} binaries cached in $CACHE/bin"; exit 0; fi

mkdir -p "$CACHE/src" "$CACHE/bin"
cd "$CACHE/src"
export GOFLAGS="${GOFLAGS:-} -mod=mod"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
gp="${GOPROXY:-$(go env GOPROXY)}"; proxy="${gp%%,*}"; proxy="${proxy:-https://proxy.golang.org}"

# The kubernetes go.mod replaces each staging module with a local path that
# only exists in its git tree; point each at its published v0.x.y instead.
curl -fsSL "$proxy/k8s.io/kubernetes/@v/v${K8S_VERSION}.mod" -o kubernetes.mod
staging_version="v0.${K8S_VERSION#1.}"
minor="${K8S_VERSION#1.}"; minor="${minor%%.*}"
{
  echo "module vibecraft.local/k8sbuild"
  echo
  grep -E '^go ' kubernetes.mod
  echo
  echo "require k8s.io/kubernetes v${K8S_VERSION}"
  echo
  echo "replace ("
  grep -E '^\s*k8s.io/[^ ]+ => \./staging/' kubernetes.mod \
    | awk -v v="$staging_version" '{print "\t" $1 " => " $1 " " v}'
  echo ")"
} > go.mod
cat > tools.go <<'GO'
//go:build tools

package k8sbuild

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
)
GO
echo "downloading k8s.io/kubernetes v${K8S_VERSION} module sources (~1 GB the first time)..."
go mod tidy -e >/dev/null 2>tidy.log || { tail -20 tidy.log; echo "error: go mod tidy failed for k8s v${K8S_VERSION}" >&2; exit 1; }
# One `go build` for all binaries: their shared packages compile once and the links run in parallel.
echo "compiling ${BINS[*]} v${K8S_VERSION} (~10 min on 2 cores)..."
out="$CACHE/bin/.tmp.$$"; rm -rf "$out"; mkdir -p "$out"
pkgs=(); for b in "${BINS[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
if ! go build -trimpath -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=v${K8S_VERSION} -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${minor}" -o "$out/" "${pkgs[@]}"; then
  rm -rf "$out"; echo "error: building ${BINS[*]} v${K8S_VERSION} failed (see output above)" >&2; exit 1
fi
for b in "${BINS[@]}"; do mv "$out/$b" "$CACHE/bin/$b"; done
rm -rf "$out"
echo "k8s v${K8S_VERSION} binaries built into $CACHE/bin"
