#!/usr/bin/env bash
# The Go builds the later stages of `make test` need (CI=true), started in the background
# at the lowest CPU priority while the first suite runs, so a cold run does not wait for
# them one after another (a suite waits on its API server and processes much of the
# time; nice 19 takes only what it leaves). Warm caches make each build a check.
#   hack/prebuild.sh start    start them; returns at once
#   hack/prebuild.sh wait     wait for them; exit status and, on failure, the log's tail
#   hack/prebuild.sh stop     stop them if still running (.ci/run on its way out)
# What is built: the control plane of $K8S_NEWEST (tests/e2e/controlplane/build.sh) and
# the kind node's binaries (hack/kind/build-binaries.sh), the upstream e2e test binary,
# agnhost and ginkgo of the kind flow's conformance subset (hack/kind/conformance/build.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
state=${XDG_CACHE_HOME:-$HOME/.cache}/pod-replace-guard/prebuild
mkdir -p "$state"

case ${1:-} in
  start)
    rm -f "$state/rc" "$state/pid"
    : >"$state/log"
    # setsid: its own process group, so `stop` ends the Go compilers too.
    setsid nice -n 19 bash -c '
      rc=0
      K8S_VERSION="$1" tests/e2e/controlplane/build.sh >/dev/null || rc=$?
      hack/kind/build-binaries.sh >/dev/null || rc=$?
      hack/kind/conformance/build.sh >/dev/null || rc=$?
      echo "$rc" >"$2/rc"' prebuild "${K8S_NEWEST:?}" "$state" >>"$state/log" 2>&1 </dev/null &
    echo $! >"$state/pid"
    ;;
  wait)
    [[ -f $state/pid ]] || { echo "hack/prebuild.sh: nothing was started" >&2; exit 2; }
    while [[ ! -f $state/rc ]]; do
      kill -0 "$(cat "$state/pid")" 2>/dev/null || break
      sleep 2
    done
    rc=$(cat "$state/rc" 2>/dev/null || echo 1)
    if [[ $rc != 0 ]]; then
      echo "hack/prebuild.sh: the background builds failed (exit $rc); the end of their log:" >&2
      tail -n 40 "$state/log" >&2
    fi
    exit "$rc"
    ;;
  stop)
    if [[ -f $state/pid && ! -f $state/rc ]]; then
      kill -- -"$(cat "$state/pid")" 2>/dev/null || true
    fi
    ;;
  *)
    echo "usage: hack/prebuild.sh start|wait|stop" >&2
    exit 2
    ;;
esac
