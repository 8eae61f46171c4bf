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
# A second cluster on the same machine (CLUSTER other than the default) gets a kubeconfig
# of its own, unless KUBECONFIG is set: kind would otherwise write it into ~/.kube/config
# and switch that file's current context, under whoever uses the default cluster there.
if [[ $CLUSTER != pod-replace-guard && -z ${KUBECONFIG:-} ]]; then
  export KUBECONFIG=$KUBECONFIG_KIND
fi
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

# --- registry or offline ------------------------------------------------------------------
# Whether a registry serves the image: `docker manifest inspect` (the client asks the
# registry itself, no daemon, nothing pulled), cut after $REGISTRY_PROBE_TIMEOUT seconds
# (5). No docker client, no network, no DNS, a registry that does not answer or has no
# such tag: all "no", and the caller takes the offline path.
registry_serves() {
  command -v docker >/dev/null 2>&1 || return 1
  timeout -k 1 "${REGISTRY_PROBE_TIMEOUT:-5}" docker manifest inspect "$1" >/dev/null 2>&1
}

# have_image for the choice, bounded the same way (a daemon that does not answer: no).
have_image_quickly() {
  command -v docker >/dev/null 2>&1 || return 1
  timeout -k 1 "${REGISTRY_PROBE_TIMEOUT:-5}" docker image inspect "$1" >/dev/null 2>&1
}

# The kind node image for `make kind-up`, printed; "offline" means node-image.sh assembles
# it. KIND_NODE_IMAGE wins (an image name, or "offline"); otherwise the stock image
# ($KIND_STOCK_NODE_IMAGE, kindest/node:v$K8S_VERSION) when the local Docker has it or a
# registry serves it, else offline. The choice and its reason are logged.
choose_node_image() {
  local stock=${KIND_STOCK_NODE_IMAGE:-kindest/node:v$K8S_VERSION}
  case ${KIND_NODE_IMAGE:-} in
    "") ;;
    offline)
      log "node image: assembled offline (KIND_NODE_IMAGE=offline)"
      echo offline; return ;;
    *)
      log "node image: $KIND_NODE_IMAGE (KIND_NODE_IMAGE)"
      echo "$KIND_NODE_IMAGE"; return ;;
  esac
  if have_image_quickly "$stock"; then
    log "node image: $stock (fast path: already in the local Docker)"
    echo "$stock"
  elif registry_serves "$stock"; then
    log "node image: $stock (fast path: the registry serves it; kind pulls it)"
    echo "$stock"
  else
    log "node image: assembled offline (no registry served $stock within ${REGISTRY_PROBE_TIMEOUT:-5}s; KIND_NODE_IMAGE=<image> overrides)"
    echo offline
  fi
}

# The webhook image's base for `make image`, printed: "registry" (FROM $PYTHON_IMAGE,
# pip from the package index) or "offline" (a Debian base, pip from wheelhouse/).
# IMAGE_OFFLINE=1 or 0 wins; empty decides as choose_node_image does.
choose_python_base() {
  local base=${PYTHON_IMAGE:-python:3.11-slim}
  case ${IMAGE_OFFLINE:-} in
    "") ;;
    0 | false | no)
      log "webhook image: FROM $base (IMAGE_OFFLINE=$IMAGE_OFFLINE)"
      echo registry; return ;;
    *)
      log "webhook image: offline base, pip from wheelhouse/ (IMAGE_OFFLINE=$IMAGE_OFFLINE)"
      echo offline; return ;;
  esac
  if have_image_quickly "$base"; then
    log "webhook image: FROM $base (fast path: already in the local Docker)"
    echo registry
  elif registry_serves "$base"; then
    log "webhook image: FROM $base (fast path: the registry serves it)"
    echo registry
  else
    log "webhook image: offline base, pip from wheelhouse/ (no registry served $base within ${REGISTRY_PROBE_TIMEOUT:-5}s; IMAGE_OFFLINE=0 overrides)"
    echo offline
  fi
}

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
# On a stock node image (a registry answers) the workload image is this one, pulled,
# tagged $WORKLOAD_IMAGE and loaded into the nodes.
WORKLOAD_SOURCE_IMAGE=${WORKLOAD_SOURCE_IMAGE:-busybox:1.36}
load_workload_image() {
  if ! have_image "$WORKLOAD_IMAGE"; then
    docker pull -q "$WORKLOAD_SOURCE_IMAGE" >/dev/null
    docker tag "$WORKLOAD_SOURCE_IMAGE" "$WORKLOAD_IMAGE"
  fi
  "$KIND_BIN" load docker-image "$WORKLOAD_IMAGE" --name "$CLUSTER" >/dev/null
}

# kind and the kubectl of the release the node runs come first, whatever else is installed.
export PATH="$(dirname "$KIND_BIN"):$K8S_BIN:$PATH"
