#!/bin/sh
# On cgroup v1 hosts where Docker does not mount every controller into the node
# (hugetlb, perf_event, net_cls,net_prio are mounted later by the node's systemd), kind's
# entrypoint does not create /kubelet and /kubelet.slice in them and kubelet fails:
#   invalid configuration: cgroup ["kubelet"] has some missing paths: /sys/fs/cgroup/hugetlb/kubelet.slice
# Creating them is a no-op everywhere else; on cgroup v2 there is nothing to do.
[ -f /sys/fs/cgroup/cgroup.controllers ] && exit 0
for d in /sys/fs/cgroup/*; do
  [ -L "$d" ] && continue
  [ "$(stat -f -c %T "$d")" = cgroupfs ] || continue
  mkdir -p "$d/kubelet" "$d/kubelet.slice"
done
