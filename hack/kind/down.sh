#!/usr/bin/env bash
# `make kind-down`: deletes the kind cluster and what its nodes leave on a cgroup v1 host.
source "$(dirname "$0")/lib.sh"

[[ -x "$KIND_BIN" ]] && docker info >/dev/null 2>&1 || exit 0
"$KIND_BIN" delete cluster --name "$CLUSTER"
# The node image's build container, left by an interrupted build: only with the default
# cluster, since up.sh of another cluster on this machine may be building with it now.
[[ $CLUSTER == pod-replace-guard ]] && { docker rm -f prg-kind-node-build >/dev/null 2>&1 || true; }
# Another kind cluster still running here (a second CLUSTER on the same machine) shares
# those cgroups: the empty ones below may be its kubelet's, so leave them.
[[ -z $("$KIND_BIN" get clusters 2>/dev/null) ]] || exit 0
# cgroup v1 controllers that Docker does not mount into the nodes (hugetlb, perf_event,
# net_cls,net_prio) were mounted by the nodes' systemd at the hierarchy root, so kubelet's
# cgroups in them outlive the nodes. Remove those (empty) leftovers, deepest first.
[[ -f /sys/fs/cgroup/cgroup.controllers ]] && exit 0
mnt=$(mktemp -d)
for controller in hugetlb perf_event net_cls,net_prio; do
  grep -q "^${controller%%,*}\s" /proc/cgroups || continue
  awk -v c="${controller%%,*}" '$3 == "cgroup" && ("," $4 ",") ~ ("," c ",") {found = 1} END {exit !found}' /proc/self/mounts && continue
  mount -t cgroup -o "$controller" none "$mnt" 2>/dev/null || continue
  for d in kubelet.slice kubelet k8s.io; do
    [[ -d "$mnt/$d" ]] && find "$mnt/$d" -depth -type d -exec rmdir {} + 2>/dev/null
  done
  umount "$mnt"
done
rmdir "$mnt"
