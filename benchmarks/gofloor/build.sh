#!/usr/bin/env bash
# Builds the Go floor webhook (benchmarks/gofloor/) with the Go toolchain on PATH (the
# one the end-to-end suite needs) and caches the binary outside the clone, keyed by the
# hash of its sources, as tests/e2e/controlplane/build.sh does. Prints the binary's path.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${CONTROLPLANE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pod-replace-guard}
key=$(cat "$here/go.mod" "$here/main.go" | sha256sum | cut -c1-16)
out="$cache/gofloor-$key/gofloor"

if [[ -x "$out" ]]; then
  echo "$out"
  exit 0
fi
command -v go >/dev/null || { echo "gofloor/build.sh: go is not installed" >&2; exit 2; }
mkdir -p "$(dirname "$out")"
# No module downloads (the floor uses the standard library only), no toolchain switch.
(cd "$here" && GOTOOLCHAIN=local GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o "$out.tmp" .)
mv "$out.tmp" "$out"
echo "$out"
