# Shared settings for the hack/kind scripts (sourced, not run).
# Everything built here is cached outside the clone, keyed by version, so a second
# `make kind-up` reuses it: binaries and root filesystems under $KIND_CACHE, images in
# the local Docker daemon under tags that carry the Kubernetes version and a hash of the
# recipe (hack/kind/), so editing the recipe rebuilds and nothing stale is reused.
set -euo pipefail

HACK_KIND=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$HACK_KIND/../.." && pwd)
K8S_VERSION=${K8S_VERSION:-1.34.4}
K8S_VERSION=${K8S_VERSION#v}
KIND_VERSION=${KIND_VERSION:-v0.33.0}
CLUSTER=${CLUSTER:-pod-replace-guard}
CACHE_ROOT=${XDG_CACHE_HOME:-$HOME/.cache}/pod-replace-guard
KIND_CACHE=${KIND_CACHE:-$CACHE_ROOT/kind}
KIND_BIN=${KIND_BIN:-$KIND_CACHE/bin/kind}
K8S_BIN=$CACHE_ROOT/k8s-v$K8S_VERSION/bin
KUBECONFIG_KIND=${KUBECONFIG_KIND:-$KIND_CACHE/kubeconfig-$CLUSTER}
DEBIAN_SUITE=bookworm
mkdir -p "$KIND_CACHE/bin" "$KIND_CACHE/logs"

# One hash of the files the node image is made from: its tag carries it, so a changed
# recipe builds anew (and a change to the scripts that only run clusters does not).
recipe_hash() {
  (cd "$HACK_KIND" && find node images k8s coredns node-image.sh rootfs.sh build-binaries.sh \
    -type f -print0 | sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-10
}

# `docker build -q`, quiet unless it fails (the classic builder's deprecation notice
# would otherwise fill the log once per image).
quiet_build() {
  local output
  output=$(docker build -q "$@" 2>&1) || { printf '%s\n' "$output" >&2; return 1; }
}

log() { printf '== %s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'hack/kind: %s\n' "$*" >&2; exit 1; }

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

# Times one step into $KIND_CACHE/logs/timings.txt (cold and warm runs are reported from
# it) and, under .ci/run, into its table of stages ($CI_STAGES, see hack/stage.sh).
timed() {
  local name=$1 start rc=0
  shift
  start=$(date +%s)
  "$@" || rc=$?
  printf '%s %s %ss rc=%s\n' "$(date -u +%FT%TZ)" "$name" "$(( $(date +%s) - start ))" "$rc" >>"$KIND_CACHE/logs/timings.txt"
  if [[ -n ${CI_STAGES:-} ]]; then
    printf '  kind: %s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - start ))" >>"$CI_STAGES"
  fi
  log "$name: $(( $(date +%s) - start ))s"
  return "$rc"
}

# Local image names (never pushed anywhere): the ".local" registry part cannot be pulled.
NODE_ROOTFS_IMAGE=prg.local/debian-node:$DEBIAN_SUITE
PYTHON_BASE_IMAGE=${PYTHON_BASE_IMAGE:-prg.local/python:3.11-$DEBIAN_SUITE}
# The image the suites' workloads run (Debian's static busybox), baked into the node.
WORKLOAD_IMAGE=prg.local/busybox:1

# kind and the kubectl of the release the node runs come first, whatever else is installed.
export PATH="$(dirname "$KIND_BIN"):$K8S_BIN:$PATH"
