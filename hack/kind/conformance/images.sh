#!/usr/bin/env bash
# Builds, with no registry, the images the [Conformance] specs of `make conformance` name,
# under the exact names test/utils/image/manifest.go of the node's release gives them, and
# loads them into the kind cluster $CLUSTER (kind load docker-image). Pods ask for them
# with the default pull policy (IfNotPresent for a tag), so nothing is pulled:
# (v1.34.4: the tags below)
#   registry.k8s.io/e2e-test-images/agnhost:2.56        upstream agnhost, from Go source
#   registry.k8s.io/e2e-test-images/busybox:1.37.0-1    Debian's busybox-static
#   registry.k8s.io/e2e-test-images/httpd:2.4.38-4, 2.4.39-4, nginx:1.14-4, 1.15-4
#                                                       busybox httpd on port 80 (stand-ins)
#   registry.k8s.io/pause:3.10.1                        already in the node (node-image.sh)
# Each tag is its own image (a /version file), so an update from one tag to the other
# changes the image as it does upstream.
source "$(dirname "$0")/../lib.sh"

e2e_bin=$("$HACK_KIND/conformance/build.sh")
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
debs=$KIND_CACHE/debs
mkdir -p "$debs"
ls "$debs"/busybox-static_*.deb >/dev/null 2>&1 || (cd "$debs" && apt-get download -q busybox-static >/dev/null)
dpkg-deb --fsys-tarfile "$debs"/busybox-static_*.deb | tar -x -O ./bin/busybox >"$ctx/busybox"
chmod 755 "$ctx/busybox"
cp "$e2e_bin/agnhost" "$ctx/agnhost"
cp "$HACK_KIND/conformance/images.Dockerfile" "$ctx/Dockerfile"

repo=registry.k8s.io/e2e-test-images
images=()
build() { # target version
  DOCKER_BUILDKIT=0 quiet_build --target "$1" --build-arg "VERSION=$2" -t "$repo/$1:$2" "$ctx"
  images+=("$repo/$1:$2")
}
# The tags, from the release's own manifest (test/utils/image/manifest.go).
k8s_dir=$(cd "$HACK_KIND/e2e" && go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
pause_tag=
while read -r key name tag; do
  case $key in
    Pause) pause_tag=$tag ;;
    *) build "$name" "$tag" ;;
  esac
done < <(sed -nE 's/^\s*configs\[(Agnhost|BusyBox|Httpd|HttpdNew|Nginx|NginxNew|Pause)\] = Config\{list\.[A-Za-z0-9]+, "([^"]+)", "([^"]+)"\}.*/\1 \2 \3/p' \
  "$k8s_dir/test/utils/image/manifest.go")
((${#images[@]} == 6)) && [[ -n $pause_tag ]] || die "unexpected images in $k8s_dir/test/utils/image/manifest.go: ${images[*]} pause:$pause_tag"
if [[ ${1:-} != --no-load ]]; then
  # kind looks for the images with crictl, which the offline node has not: it loads them
  # every time (a few seconds). Its "not yet present ... loading" lines are dropped.
  "$KIND_BIN" load docker-image "${images[@]}" --name "$CLUSTER" 2>&1 >/dev/null | { grep -v 'not yet present on node' || true; } >&2
  # The pause image the specs name is the node's sandbox image: check it is there.
  for node in $("$KIND_BIN" get nodes --name "$CLUSTER"); do
    # (the list is read whole: grep -q stopping early would fail the pipe under pipefail)
    listed=$(docker exec "$node" ctr -n k8s.io images ls -q)
    grep -qx "registry.k8s.io/pause:$pause_tag" <<<"$listed" ||
      die "$node has no registry.k8s.io/pause:$pause_tag"
  done
fi
printf '%s\n' "${images[@]}"
