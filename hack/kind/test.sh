#!/usr/bin/env bash
# The whole kind flow, as a user runs it and as CI runs it (`make kind-test`, called by
# `make test` when CI=true):
#   make kind-up image kind-load deploy e2e-kind helm-kind
# The cluster is deleted at the end, whatever happened; on failure the cluster's state
# (nodes, pods, events, the webhook's logs, kubelet logs) is printed first.
# KEEP_CLUSTER=1 keeps it for a look afterwards.
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"

make_=${MAKE:-make}
image_offline=${IMAGE_OFFLINE-1}
finish() {
  local rc=$?
  if ((rc != 0)); then
    log "the kind flow failed (exit $rc)"
    "$HACK_KIND/diagnostics.sh" || true
  fi
  if [[ -z ${KEEP_CLUSTER:-} ]]; then
    timed kind-down "$HACK_KIND/down.sh" >/dev/null 2>&1 || true
  fi
  log "timings of this run and earlier ones: $KIND_CACHE/logs/timings.txt"
  exit "$rc"
}
trap finish EXIT

# A cluster left by an interrupted run would be reused with unknown state: start clean.
"$HACK_KIND/host.sh"
"$HACK_KIND/down.sh" >/dev/null 2>&1 || true
timed kind-up "$make_" --no-print-directory kind-up
timed image "$make_" --no-print-directory image IMAGE_OFFLINE="$image_offline"
timed kind-load "$make_" --no-print-directory kind-load
# With client-certificate authentication: the cluster's API server has the identity
# (admission.sh), so every test below also shows that it presents it.
# And with the NetworkPolicy, admitting the kind Docker network (the nodes, where the
# API server and the kubelets run). The offline CNI does not enforce policies; the
# real API server still validates it, and the suite runs with it applied.
kind_network=$(docker network inspect kind -f '{{range .IPAM.Config}}{{.Subnet}} {{end}}' | tr ' ' '\n' | grep -v : | head -n1)
timed deploy "$make_" --no-print-directory deploy CLIENT_CA="$KIND_CACHE/admission-$CLUSTER/client-ca.crt" \
  NETWORK_POLICY_CIDRS="$kind_network"
kubectl get nodes -o wide
kubectl get pods -A -o wide
# A subset of the upstream [Conformance] specs, with the webhook enforcing (make
# conformance runs all of them, with and without it); any failure fails the flow.
timed conformance-subset "$HACK_KIND/conformance/ci-subset.sh"
# -rP: the figures the tests print (updates sent and failed per disruption, the
# workloads' times with and without the webhook) end up in the log.
PYTEST_ADDOPTS="${PYTEST_ADDOPTS:-} -rP" timed e2e-kind "$make_" --no-print-directory e2e-kind
# Then the Helm chart on the same cluster: it removes the kustomize install first.
PYTEST_ADDOPTS="${PYTEST_ADDOPTS:-} -rP" timed helm-kind "$make_" --no-print-directory helm-kind \
  CLIENT_CA="$KIND_CACHE/admission-$CLUSTER/client-ca.crt"
