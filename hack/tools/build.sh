#!/usr/bin/env bash
# Builds helm, promtool and actionlint from Go modules (the versions pinned in
# hack/tools/*/go.mod) and caches them outside the clone, keyed by version, like
# tests/e2e/controlplane/build.sh. Prints the bin directory holding them.
#
#   hack/tools/build.sh            # all three
#   hack/tools/build.sh helm       # some of them
#
# Cold builds take minutes on 2 cores (actionlint about 10 seconds); a warm run only
# checks that the files are there.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${TOOLS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pod-replace-guard/tools}
out="$cache/bin"

# The version of module $2 that $1/go.mod requires.
pinned() { awk -v m="$2" '($1 == m && $2 ~ /^v/) {print $2; exit} ($1 == "require" && $2 == m) {print $3; exit}' "$here/$1/go.mod"; }

helm_version=$(pinned helm helm.sh/helm/v3)
prometheus_module=$(pinned promtool github.com/prometheus/prometheus)
# Prometheus tags its Go module v0.MINOR.PATCH for release v3.MINOR.PATCH.
minor=${prometheus_module#v0.}
minor=${minor%%.*}
promtool_version=v3.$((minor - 300)).${prometheus_module##*.}
actionlint_version=$(pinned actionlint github.com/rhysd/actionlint)

build() {
  local tool=$1 version=$2 pkg=$3 ldflags=$4 target start
  target="$out/$tool-$version"
  if [[ ! -x "$target" ]]; then
    command -v go >/dev/null || { echo "hack/tools/build.sh: go is needed to build $tool" >&2; exit 2; }
    mkdir -p "$out"
    start=$(date +%s)
    echo "hack/tools/build.sh: building $tool $version (cold builds take minutes)" >&2
    (cd "$here/$tool" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w $ldflags" -o "$target.tmp" "$pkg")
    mv "$target.tmp" "$target"
    echo "hack/tools/build.sh: built $tool in $(( $(date +%s) - start ))s" >&2
  fi
  ln -sfn "$tool-$version" "$out/$tool"
}

tools=("$@")
((${#tools[@]})) || tools=(helm promtool actionlint)
for tool in "${tools[@]}"; do
  case $tool in
    helm)
      # As helm's Makefile: the default Kubernetes version (helm template, helm lint)
      # is that of the client-go it is built with.
      k8s_minor=$(pinned helm k8s.io/client-go)
      k8s_minor=${k8s_minor#v0.}
      k8s_minor=${k8s_minor%%.*}
      flags="-X helm.sh/helm/v3/internal/version.version=$helm_version -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
      for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
        flags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$k8s_minor"
      done
      build helm "$helm_version" helm.sh/helm/v3/cmd/helm "$flags" ;;
    promtool)
      build promtool "$promtool_version" github.com/prometheus/prometheus/cmd/promtool \
        "-X github.com/prometheus/common/version.Version=${promtool_version#v} -X github.com/prometheus/common/version.Branch=HEAD" ;;
    actionlint)
      # As actionlint's release builds: `actionlint -version` prints the tag.
      build actionlint "$actionlint_version" github.com/rhysd/actionlint/cmd/actionlint \
        "-X github.com/rhysd/actionlint.version=$actionlint_version" ;;
    *) echo "hack/tools/build.sh: unknown tool $tool (helm, promtool, actionlint)" >&2; exit 2 ;;
  esac
done
echo "$out"
