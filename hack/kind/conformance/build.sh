#!/usr/bin/env bash
# Builds, from Go modules (hack/kind/e2e), what `make conformance` runs on the kind cluster:
#   e2e.test   the upstream e2e test binary of the node's release (go test -c
#              k8s.io/kubernetes/test/e2e), the binary Sonobuoy and the conformance
#              program run
#   agnhost    test/images/agnhost, static, for the image the specs name (images.sh)
#   ginkgo     the ginkgo CLI of the same module, which runs e2e.test's specs in parallel
# into $E2E_BIN ($CACHE_ROOT/e2e-v$K8S_VERSION/bin, outside the clone, by version). Prints
# that directory. A warm run only checks the files are there, built from this go.mod and
# go.sum (a stamp per file holds their hash).
source "$(dirname "$0")/../lib.sh"

pinned=$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' "$HACK_KIND/e2e/go.mod")
[[ "v$K8S_VERSION" == "$pinned" ]] ||
  die "the conformance binaries are pinned to Kubernetes $pinned (hack/kind/e2e/go.mod); K8S_VERSION=$K8S_VERSION"

E2E_BIN=$CACHE_ROOT/e2e-v$K8S_VERSION/bin
mkdir -p "$E2E_BIN"
module_hash=$(cat "$HACK_KIND/e2e/go.mod" "$HACK_KIND/e2e/go.sum" | sha256sum | cut -c1-16)
fresh() { [[ -x "$E2E_BIN/$1" && $(cat "$E2E_BIN/.$1.stamp" 2>/dev/null) == "$module_hash" ]]; }
built() { echo "$module_hash" >"$E2E_BIN/.$1.stamp"; }
if fresh e2e.test && fresh agnhost && fresh ginkgo; then echo "$E2E_BIN"; exit 0; fi
command -v go >/dev/null || die "go is needed to build the e2e test binary and agnhost"

major=${K8S_VERSION%%.*}
minor=${K8S_VERSION#*.}; minor=${minor%%.*}
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=v$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
cd "$HACK_KIND/e2e"
if ! fresh e2e.test; then
  log "building e2e.test v$K8S_VERSION (go test -c k8s.io/kubernetes/test/e2e; cold about 15 minutes on 2 cores)"
  # -vet=off: vet of the whole tree would double the time and checks nothing of ours.
  go test -c -vet=off -trimpath -ldflags "$ldflags" -o "$E2E_BIN/e2e.test.tmp" k8s.io/kubernetes/test/e2e
  mv "$E2E_BIN/e2e.test.tmp" "$E2E_BIN/e2e.test"
  built e2e.test
fi
if ! fresh agnhost; then
  log "building agnhost (test/images/agnhost of k8s.io/kubernetes v$K8S_VERSION, static)"
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$E2E_BIN/agnhost" k8s.io/kubernetes/test/images/agnhost
  built agnhost
fi
if ! fresh ginkgo; then
  go build -trimpath -ldflags "-s -w" -o "$E2E_BIN/ginkgo" github.com/onsi/ginkgo/v2/ginkgo
  built ginkgo
fi
echo "$E2E_BIN"
