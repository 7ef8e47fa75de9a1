#!/usr/bin/env bash
# Build the project's container images from its real Dockerfiles with podman, cached outside the clone:
#   localhost/vibecraft/base:bookworm-<key>   Debian 12 + python3 (mmdebstrap), stands in for python:3.11-slim-bookworm
#   localhost/vibecraft/renderer:<version>    Dockerfile.renderer
#   localhost/vibecraft/operator:<version>    Dockerfile.operator, target operator
#   localhost/vibecraft/api:<version>         Dockerfile.operator, target api
# and export each as an OCI archive for `ctr -n k8s.io images import` (or `kind load image-archive`).
#
# Cache: ${VIBECRAFT_CACHE:-~/.cache/vibecraft}/images/
#   base-bookworm-<key>.tar   the mmdebstrap rootfs; <key> hashes the package list, suite, mirrors and CA bundle
#   vibecraft-<name>-<version>.oci.tar (+ .inputs)   the exported images
# Each image carries the label io.vibecraft.inputs = a hash of its Dockerfile, the files it COPYs, the
# build target and the base image; a build is skipped when the tagged image already has the current hash.
# Wheels are reused across rebuilds through the Dockerfiles' pip cache mount (buildah keeps it in /var/tmp).
#
# Needs root (mmdebstrap, rootful podman). VIBECRAFT_IMAGES_FORCE=1 rebuilds everything.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${VIBECRAFT_CACHE:-$HOME/.cache/vibecraft}/images"
SUITE="${VIBECRAFT_BASE_SUITE:-bookworm}"
MIRROR="${VIBECRAFT_DEBIAN_MIRROR:-http://deb.debian.org}"
BASE_PACKAGES=(python3 python3-venv python-is-python3 ca-certificates)
HOST_CA="${VIBECRAFT_BUILD_CA:-/etc/ssl/certs/ca-certificates.crt}"
CA_IN_IMAGE=/usr/local/share/vibecraft/build-ca-bundle.crt
FORCE="${VIBECRAFT_IMAGES_FORCE:-0}"
# podman's default runtime (crun) refuses cgroup v1 hybrid hosts and raising rlimits may be refused:
# runc and modest ulimits for every build and run, through a containers.conf of our own.
RUNTIME="${VIBECRAFT_OCI_RUNTIME:-/usr/sbin/runc}"
ULIMITS=(--ulimit nofile=1024:1024 --ulimit nproc=4096:4096)

die() { echo "error: $*" >&2; exit 1; }
steps=6
n=0
t0=$(date +%s)
step() { n=$((n + 1)); echo "[images $n/$steps] $*"; }
elapsed() { echo "$(( $(date +%s) - $1 )) s"; }

command -v podman >/dev/null || die "podman not found (apt-get install podman buildah runc mmdebstrap)"
[ -x "$RUNTIME" ] || die "OCI runtime $RUNTIME not found (apt-get install runc, or set VIBECRAFT_OCI_RUNTIME)"
[ -r "$HOST_CA" ] || die "CA bundle $HOST_CA not readable (set VIBECRAFT_BUILD_CA)"
mkdir -p "$CACHE"
# One build at a time (make demo, make test, a second checkout): two podman builds of one tag, writing
# one log, left a build reported failed while the other had tagged it.
exec 9>"$CACHE/.build.lock"
if ! flock -n 9; then
  echo "[images] another build-images.sh is running; waiting for it"
  flock 9
fi

conf="$CACHE/containers.conf"
cat > "$conf.tmp" <<EOF
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
[engine]
runtime = "runc"
[engine.runtimes]
runc = ["$RUNTIME"]
EOF
mv "$conf.tmp" "$conf"
export CONTAINERS_CONF="$conf"
PODMAN=(podman --runtime "$RUNTIME")

VERSION="$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')" \
  || die "cannot read the version from pyproject.toml"

label_of() { "${PODMAN[@]}" image inspect --format '{{index .Labels "io.vibecraft.inputs"}}' "$1" 2>/dev/null || true; }
size_of() { "${PODMAN[@]}" image inspect --format '{{.Size}}' "$1"; }
mb() { echo "$(( ($1 + 500000) / 1000000 )) MB"; }

# ---- 1. base image ----------------------------------------------------------------------------------
base_key="$({ echo "recipe 3"; echo "$SUITE"; echo "$MIRROR"; printf '%s\n' "${BASE_PACKAGES[@]}"; sha256sum < "$HOST_CA"; } \
  | sha256sum | cut -c1-16)"
BASE="localhost/vibecraft/base:$SUITE-$base_key"
base_tar="$CACHE/base-$SUITE-$base_key.tar"
if [ "$FORCE" != 1 ] && "${PODMAN[@]}" image exists "$BASE"; then
  step "base image $BASE: cached"
elif [ "$FORCE" != 1 ] && [ -s "$base_tar" ]; then
  step "base image $BASE: importing the cached rootfs (~5 s)"
else
  step "base image $BASE: mmdebstrap $SUITE + ${BASE_PACKAGES[*]} (~1-2 min)"
  command -v mmdebstrap >/dev/null || die "mmdebstrap not found (apt-get install mmdebstrap)"
  s=$(date +%s)
  rm -f "$base_tar.tmp"
  # The host's CA bundle (it may hold a TLS-intercepting proxy's CA) goes in as a file of its own, so
  # update-ca-certificates in a later apt step cannot drop it; PIP_CERT points pip at it.
  # Like debian:bookworm-slim (python:*-slim's base): no recommends, no docs/man pages/locales (dpkg
  # path-excludes, kept in the rootfs so the Dockerfiles' apt-get installs follow them too) and apt
  # deletes the .debs it downloaded after installing them (the docker-clean config).
  # Merged /usr through mmdebstrap's merged-usr hook (symlinks + usr-is-merged, as debootstrap and the
  # debian images do): otherwise init-system-helpers pulls in the usrmerge package and with it perl
  # (libperl + perl-modules, ~50 MB) that nothing in the images uses; perl-base (essential) stays.
  if ! mmdebstrap --quiet --variant=minbase --format=tar --include="$(IFS=,; echo "${BASE_PACKAGES[*]}")" \
      --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
      --aptopt='APT::Install-Recommends "false"' \
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
      --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
      --dpkgopt='path-exclude=/usr/share/lintian/*' \
      --customize-hook="mkdir -p \"\$1$(dirname "$CA_IN_IMAGE")\" && cp '$HOST_CA' \"\$1$CA_IN_IMAGE\"" \
      --customize-hook='printf "%s\n" \
          "DPkg::Post-Invoke { \"rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true\"; };" \
          "APT::Update::Post-Invoke { \"rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true\"; };" \
          "Dir::Cache::pkgcache \"\";" "Dir::Cache::srcpkgcache \"\";" > "$1/etc/apt/apt.conf.d/docker-clean"' \
      --customize-hook='rm -rf "$1"/var/cache/apt/*.bin "$1"/var/lib/apt/lists/*' \
      "$SUITE" "$base_tar.tmp" \
      "deb $MIRROR/debian $SUITE main" "deb $MIRROR/debian $SUITE-updates main" \
      "deb $MIRROR/debian-security $SUITE-security main" > "$CACHE/mmdebstrap.log" 2>&1; then
    tail -20 "$CACHE/mmdebstrap.log" >&2
    die "mmdebstrap failed (log: $CACHE/mmdebstrap.log)"
  fi
  mv "$base_tar.tmp" "$base_tar"
  find "$CACHE" -maxdepth 1 -name 'base-*.tar' ! -name "$(basename "$base_tar")" -delete  # older recipes
  echo "[images] rootfs built in $(elapsed "$s"): $base_tar"
fi
if [ "$FORCE" = 1 ] || ! "${PODMAN[@]}" image exists "$BASE"; then
  "${PODMAN[@]}" import --quiet \
    --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --change "ENV LANG=C.UTF-8" \
    --change "ENV PIP_CERT=$CA_IN_IMAGE" \
    --change 'CMD ["python3"]' \
    --change "LABEL io.vibecraft.inputs=$base_key" \
    "$base_tar" "$BASE" >/dev/null || die "podman import $base_tar failed"
fi

# ---- 2-4. the project's images ------------------------------------------------------------------------
# The inputs of one image: the Dockerfile, every path it COPYs from the context (bytecode caches and
# egg-info left by local runs excluded), the target and the base image.
inputs_hash() {  # dockerfile target
  local dockerfile=$1 target=$2 srcs
  mapfile -t srcs < <(awk 'toupper($1) == "COPY" && $2 !~ /^--from/ { for (i = 2; i < NF; i++) if ($i !~ /^--/) print $i }' "$dockerfile")
  [ ${#srcs[@]} -gt 0 ] || die "no COPY sources found in $dockerfile"
  {
    echo "target $target base $BASE"
    sha256sum "$dockerfile"
    find "${srcs[@]}" -type f -not -path '*/__pycache__/*' -not -name '*.pyc' -not -path '*.egg-info/*' -print0 \
      | LC_ALL=C sort -z | xargs -0 sha256sum
  } | sha256sum | cut -c1-16
}

build() {  # name dockerfile target(or "") estimate
  local name=$1 dockerfile=$2 target=$3 estimate=$4 ref hash s log
  ref="localhost/vibecraft/$name:$VERSION"
  hash="$(inputs_hash "$dockerfile" "${target:-final}")"
  if [ "$FORCE" != 1 ] && [ "$(label_of "$ref")" = "$hash" ]; then
    step "$ref: up to date (inputs $hash)"
    return
  fi
  step "$ref: building from $dockerfile${target:+ (target $target)} (first time $estimate, with cached layers/wheels much less)"
  s=$(date +%s)
  log="$CACHE/build-$name.log"
  local previous
  previous="$("${PODMAN[@]}" image inspect --format '{{.Id}}' "$ref" 2>/dev/null || true)"
  local args=(build --network host "${ULIMITS[@]}" --layers --format oci -f "$dockerfile"
              --build-arg "PYTHON_IMAGE=$BASE" --label "io.vibecraft.inputs=$hash"
              --label "org.opencontainers.image.version=$VERSION" -t "$ref")
  [ -n "$target" ] && args+=(--target "$target")
  if ! "${PODMAN[@]}" "${args[@]}" . > "$log" 2>&1; then
    tail -30 "$log" >&2
    die "building $ref failed (full log: $log)"
  fi
  echo "[images] built $ref in $(elapsed "$s")"
  # The image this build replaced: untagged now, it would only fill the disk (CI once reached the
  # kubelet's image-GC threshold). Build-stage layers stay cached; an image still in use stays too.
  if [ -n "$previous" ] && [ "$previous" != "$("${PODMAN[@]}" image inspect --format '{{.Id}}' "$ref")" ]; then
    "${PODMAN[@]}" rmi "$previous" >/dev/null 2>&1 || true
  fi
}

build renderer Dockerfile.renderer "" "~12 min alone, ~24 min beside the Go builds; most of it building ffmpeg"
build operator Dockerfile.operator operator "~3 min"
build api Dockerfile.operator api "~1 min"

# ---- 5. OCI archives ---------------------------------------------------------------------------------
step "exporting OCI archives to $CACHE (~20 s per changed image)"
for name in renderer operator api; do
  ref="localhost/vibecraft/$name:$VERSION"
  out="$CACHE/vibecraft-$name-$VERSION.oci.tar"
  id="$("${PODMAN[@]}" image inspect --format '{{.Id}}' "$ref")" || die "image $ref missing after build"
  if [ "$FORCE" != 1 ] && [ -s "$out" ] && [ "$(cat "$out.inputs" 2>/dev/null)" = "$id" ]; then continue; fi
  rm -f "$out.tmp"
  "${PODMAN[@]}" save --quiet --format oci-archive -o "$out.tmp" "$ref" || die "podman save $ref failed"
  mv "$out.tmp" "$out"
  echo "$id" > "$out.inputs"
  echo "[images] saved $out"
done

# ---- 6. summary ----------------------------------------------------------------------------------------
step "done in $(elapsed "$t0")"
for name in renderer operator api; do
  ref="localhost/vibecraft/$name:$VERSION"
  out="$CACHE/vibecraft-$name-$VERSION.oci.tar"
  printf '  %-36s %8s  (archive %s, %s)\n' "$ref" "$(mb "$(size_of "$ref")")" "$out" "$(mb "$(stat -c %s "$out")")"
done
