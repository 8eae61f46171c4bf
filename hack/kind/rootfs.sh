#!/usr/bin/env bash
# Debian root filesystems built with debootstrap from Debian's packages, imported as
# local images (no registry): the kind node's base and the webhook image's Python base.
#
#   hack/kind/rootfs.sh node     -> image $NODE_ROOTFS_IMAGE  (systemd, containerd, runc, iptables)
#   hack/kind/rootfs.sh python   -> image $PYTHON_BASE_IMAGE  (python3, venv)
#
# Each root filesystem is kept under $KIND_CACHE (the node's also feeds the component
# images' glibc and iptables files), so a warm run only checks that the image exists.
source "$(dirname "$0")/lib.sh"

what=${1:?usage: rootfs.sh node|python}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
case $what in
  node)
    image=$NODE_ROOTFS_IMAGE
    # What kind's base image has, from Debian: systemd as init, containerd and runc as the
    # node's runtime, iptables/conntrack for kube-proxy, the tools kubeadm's preflight wants.
    packages=systemd,systemd-sysv,dbus,iproute2,iptables,ca-certificates,containerd,runc,conntrack,ethtool,socat,kmod,mount,util-linux,procps,libseccomp2,jq,containernetworking-plugins
    ;;
  python)
    image=$PYTHON_BASE_IMAGE
    packages=python3,python3-venv,ca-certificates,tzdata
    ;;
  *) die "usage: rootfs.sh node|python" ;;
esac
dir=$KIND_CACHE/rootfs-$what-$DEBIAN_SUITE

have_image "$image" && { echo "$image"; exit 0; }
if [[ ! -f "$dir/.complete" ]]; then
  rm -rf "$dir"
  log "debootstrap $DEBIAN_SUITE ($what) into $dir"
  debootstrap --variant=minbase --include="$packages" "$DEBIAN_SUITE" "$dir" "$mirror" >"$KIND_CACHE/logs/debootstrap-$what.log" 2>&1 ||
    { tail -n 20 "$KIND_CACHE/logs/debootstrap-$what.log" >&2; die "debootstrap failed"; }
  # apt lists and caches are not part of an image.
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
  touch "$dir/.complete"
fi
tar -C "$dir" --exclude=./.complete -c . | docker import - "$image" >/dev/null
echo "$image"
