#!/usr/bin/env bash
# Assembles the kind node image for Kubernetes $K8S_VERSION with no registry, the way
# `kind build node-image` would with one (kind#1266, #2063: it always pulls):
#   1. the Debian root filesystem (rootfs.sh node) and every binary (build-binaries.sh);
#   2. the images kubeadm expects (`kubeadm config images list`) and a busybox for the
#      suites' workloads, built FROM scratch, saved under prg.local/ names so that no tag
#      of the host's Docker (perhaps a real registry.k8s.io image) is touched;
#   3. the node: node/Dockerfile on the root filesystem, then its containerd started in a
#      build container, the images imported and tagged with their upstream names, and the
#      container committed.
# Prints the image name, prg.local/kind-node:v$K8S_VERSION-<recipe hash>; a warm run
# finds it and does nothing else.
source "$(dirname "$0")/lib.sh"

node_image=prg.local/kind-node:v$K8S_VERSION-$(recipe_hash)
if have_image "$node_image"; then echo "$node_image"; exit 0; fi

export DOCKER_BUILDKIT=0   # the classic builder needs no frontend image from a registry
rootfs_image=$("$HACK_KIND/rootfs.sh" node)
rootfs=$KIND_CACHE/rootfs-node-$DEBIAN_SUITE
bin=$("$HACK_KIND/build-binaries.sh")
work=$KIND_CACHE/node-build
rm -rf "$work" && mkdir -p "$work"

# --- component images ---------------------------------------------------------------
mapfile -t upstream < <("$bin/kubeadm" config images list --kubernetes-version "v$K8S_VERSION" 2>/dev/null)
((${#upstream[@]} >= 6)) || die "kubeadm config images list gave: ${upstream[*]}"
ctx=$work/images
mkdir -p "$ctx/glibc/lib/x86_64-linux-gnu" "$ctx/glibc/lib64" "$ctx/glibc/etc" "$ctx/glibc/tmp"
cp -L "$rootfs/lib/x86_64-linux-gnu/libc.so.6" "$ctx/glibc/lib/x86_64-linux-gnu/"
cp -L "$rootfs/lib64/ld-linux-x86-64.so.2" "$ctx/glibc/lib64/"
echo 'hosts: files dns' >"$ctx/glibc/etc/nsswitch.conf"
chmod 1777 "$ctx/glibc/tmp"
cp "$HACK_KIND"/images/* "$ctx/"
"$HACK_KIND/images/kube-proxy-root.sh" "$rootfs" "$ctx/kproxy-root"
for b in kube-apiserver kube-controller-manager kube-scheduler kube-proxy etcd coredns pause; do
  cp "$bin/$b" "$ctx/"
done
apt_dir=$KIND_CACHE/debs
mkdir -p "$apt_dir"
ls "$apt_dir"/busybox-static_*.deb >/dev/null 2>&1 || (cd "$apt_dir" && apt-get download -q busybox-static >/dev/null)
dpkg-deb --fsys-tarfile "$apt_dir"/busybox-static_*.deb | tar -x -O ./bin/busybox >"$ctx/busybox"
chmod 755 "$ctx/busybox"

local_names=()   # prg.local/<upstream path> -> tagged upstream inside the node
for ref in "${upstream[@]}"; do
  name=${ref##*/}; name=${name%%:*}
  local_ref=prg.local/${ref#*/}
  case $name in
    kube-proxy) quiet_build -f "$ctx/kube-proxy.Dockerfile" -t "$local_ref" "$ctx" ;;
    coredns) quiet_build -f "$ctx/coredns.Dockerfile" -t "$local_ref" "$ctx" ;;
    pause) quiet_build -f "$ctx/pause.Dockerfile" -t "$local_ref" "$ctx" ;;
    kube-apiserver | kube-controller-manager | kube-scheduler | etcd)
      quiet_build --build-arg "BIN=$name" -f "$ctx/binary.Dockerfile" -t "$local_ref" "$ctx" ;;
    *) die "no recipe for the image $ref" ;;
  esac
  local_names+=("$local_ref=$ref")
  [[ $name == pause ]] && pause_ref=$ref
done
# kind's containerd configuration names pause:3.10; the sandbox image is set to the tag
# kubeadm expects, and the other stays valid for anything that asks for it.
pause_local=prg.local/${pause_ref#*/}
local_names+=("$pause_local=registry.k8s.io/pause:3.10")
quiet_build -f "$ctx/busybox.Dockerfile" -t "$WORKLOAD_IMAGE" "$ctx"
local_names+=("$WORKLOAD_IMAGE=$WORKLOAD_IMAGE")
saved=()
for pair in "${local_names[@]}"; do saved+=("${pair%%=*}"); done
mapfile -t saved < <(printf '%s\n' "${saved[@]}" | sort -u)
docker save "${saved[@]}" -o "$work/images.tar"

# --- the node -------------------------------------------------------------------------
kind_dir=$(cd / && go mod download -json "sigs.k8s.io/kind@$KIND_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
nctx=$work/node
mkdir -p "$nctx"
cp -r "$kind_dir/images/base/files" "$nctx/kind-files"
chmod -R u+w "$nctx/kind-files"
cp "$bin/kubelet" "$bin/kubeadm" "$bin/kubectl" "$HACK_KIND"/node/* "$nctx/"
quiet_build --build-arg "ROOTFS=$rootfs_image" --build-arg "K8S_VERSION=$K8S_VERSION" \
  --build-arg "PAUSE_IMAGE=$pause_ref" -t prg.local/kind-node-pre:build "$nctx"

builder=prg-kind-node-build
docker rm -f "$builder" >/dev/null 2>&1 || true
trap 'docker rm -f "$builder" >/dev/null 2>&1 || true' EXIT
docker run -d --name "$builder" --privileged --security-opt seccomp=unconfined \
  --entrypoint sleep prg.local/kind-node-pre:build infinity >/dev/null
docker exec -d "$builder" sh -c 'containerd >/var/log/containerd-build.log 2>&1'
for _ in $(seq 60); do docker exec "$builder" test -S /run/containerd/containerd.sock && break; sleep 1; done
# --no-unpack writes only the content store (no overlay on overlay during the build);
# the node's containerd unpacks an image on first use, on its /var volume.
docker exec -i "$builder" ctr -n k8s.io images import --all-platforms --no-unpack - <"$work/images.tar" >/dev/null
for pair in "${local_names[@]}"; do
  from=${pair%%=*} to=${pair#*=}
  [[ $from == "$to" ]] || docker exec "$builder" ctr -n k8s.io images tag --force "$from" "$to" >/dev/null
done
for pair in "${local_names[@]}"; do
  from=${pair%%=*} to=${pair#*=}
  [[ $from == "$to" ]] || docker exec "$builder" ctr -n k8s.io images rm "$from" >/dev/null 2>&1 || true
done
docker exec "$builder" ctr -n k8s.io images ls -q >&2
docker exec "$builder" sh -c 'kill $(pidof containerd); sleep 2; rm -f /var/log/containerd-build.log'
docker commit --change 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' --change 'CMD []' \
  "$builder" "$node_image" >/dev/null
docker rm -f "$builder" >/dev/null
docker rmi prg.local/kind-node-pre:build "${saved[@]}" >/dev/null 2>&1 || true
rm -rf "$work"
echo "$node_image"
