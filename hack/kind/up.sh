#!/usr/bin/env bash
# `make kind-up`: a kind cluster named $CLUSTER with a control plane and a worker, Ready,
# CoreDNS and kube-proxy running. The node image is the stock kindest/node:v$K8S_VERSION
# where a registry serves it (a probe of a few seconds) and is built offline
# (node-image.sh) where none does; KIND_NODE_IMAGE (an image, or "offline") decides
# instead (choose_node_image in lib.sh). An existing cluster of that name is reused. On
# failure the nodes' logs are exported and the cluster is deleted, so a retry starts clean.
source "$(dirname "$0")/lib.sh"

"$HACK_KIND/host.sh"
if "$KIND_BIN" get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  log "kind cluster $CLUSTER exists; reusing it"
  "$KIND_BIN" export kubeconfig --name "$CLUSTER" >/dev/null
  exit 0
fi

stock=false
image=$(choose_node_image)
if [[ $image == offline ]]; then
  image=$(timed node-image "$HACK_KIND/node-image.sh")
else
  [[ $image == prg.local/* ]] || stock=true
fi
admission_dir=$("$HACK_KIND/admission.sh")
config=$KIND_CACHE/cluster-$CLUSTER.yaml
sed "s|@ADMISSION_DIR@|$admission_dir|" "$HACK_KIND/cluster.yaml" >"$config"
if $stock; then
  # The stock image brings kindnetd: keep kind's default CNI.
  sed -i '/disableDefaultCNI/d' "$config"
fi

fail() {
  local dir=$KIND_CACHE/logs/kind-export-$(date +%s)
  log "kind-up failed; node logs in $dir"
  "$KIND_BIN" export logs "$dir" --name "$CLUSTER" >/dev/null 2>&1 || true
  "$HACK_KIND/diagnostics.sh" || true
  "$HACK_KIND/down.sh" || true
  exit 1
}
trap fail ERR

log "creating kind cluster $CLUSTER from $image"
# --retain keeps failed nodes long enough to export their logs (fail() deletes them).
timed kind-create "$KIND_BIN" create cluster --name "$CLUSTER" --image "$image" --config "$config" --retain
$stock || timed cni "$HACK_KIND/cni.sh"
if $stock; then
  # The suites' workload image, which the offline node image has baked in.
  timed workload-image load_workload_image ||
    log "could not load $WORKLOAD_IMAGE: the e2e workloads (Jobs, kubectl debug) will not start"
fi
# Workloads on both nodes, so the webhook's replicas spread and draining one node leaves
# the other (kind taints its control plane).
kubectl taint nodes -l node-role.kubernetes.io/control-plane node-role.kubernetes.io/control-plane:NoSchedule- >/dev/null 2>&1 || true
timed nodes-ready kubectl wait --for=condition=Ready node --all --timeout=180s
kubectl -n kube-system rollout status deployment/coredns --timeout=180s
kubectl -n kube-system rollout status daemonset/kube-proxy --timeout=180s
trap - ERR
kubectl get nodes -o wide
