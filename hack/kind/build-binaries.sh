#!/usr/bin/env bash
# Builds every binary the offline kind node image needs, from Go modules and Debian's
# gcc, into $K8S_BIN (shared with the local control plane of the e2e suite):
#   kube-apiserver, etcd, kubectl     tests/e2e/controlplane/build.sh
#   kubelet, kubeadm, kube-controller-manager, kube-scheduler, kube-proxy
#                                     hack/kind/k8s (upstream mains of k8s.io/kubernetes)
#   coredns                           hack/kind/coredns (the Corefile's plugins only)
#   pause                             build/pause/linux/pause.c of k8s.io/kubernetes
# Prints the bin directory. Warm runs only check that the files are there.
source "$(dirname "$0")/lib.sh"

pinned=$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' "$HACK_KIND/k8s/go.mod")
[[ "v$K8S_VERSION" == "$pinned" ]] ||
  die "the offline node image is pinned to Kubernetes $pinned (hack/kind/k8s/go.mod); K8S_VERSION=$K8S_VERSION"
node_binaries=(kubelet kubeadm kube-controller-manager kube-scheduler kube-proxy)

K8S_VERSION=$K8S_VERSION "$REPO_ROOT/tests/e2e/controlplane/build.sh" >/dev/null

missing=()
for b in "${node_binaries[@]}" coredns pause; do [[ -x "$K8S_BIN/$b" ]] || missing+=("$b"); done
if ((${#missing[@]} == 0)); then echo "$K8S_BIN"; exit 0; fi
command -v go >/dev/null || die "go is needed to build ${missing[*]}"

major=${K8S_VERSION%%.*}
minor=${K8S_VERSION#*.}; minor=${minor%%.*}
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=v$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
packages=()
for b in "${node_binaries[@]}"; do packages+=("k8s.io/kubernetes/cmd/$b"); done
log "building ${node_binaries[*]} v$K8S_VERSION (a cold build takes about 10 minutes on 2 cores)"
# CGO stays at Go's default, as in build.sh, so both share the build cache; the binaries
# link against glibc, which the node (Debian) and the component images carry.
(cd "$HACK_KIND/k8s" && go build -trimpath -ldflags "$ldflags" -o "$K8S_BIN/" "${packages[@]}")

if [[ ! -x "$K8S_BIN/coredns" ]]; then
  log "building coredns"
  # Static, so its image needs nothing but the binary.
  (cd "$HACK_KIND/coredns" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$K8S_BIN/coredns" .)
fi

if [[ ! -x "$K8S_BIN/pause" ]]; then
  k8s_dir=$(cd / && go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  pause_version=$(awk -F' *[?:]?= *' '$1 == "TAG" {print $2; exit}' "$k8s_dir/build/pause/Makefile")
  gcc -Os -static -DVERSION="${pause_version:-unknown}" -o "$K8S_BIN/pause" "$k8s_dir/build/pause/linux/pause.c"
  strip "$K8S_BIN/pause"
fi
echo "$K8S_BIN"
