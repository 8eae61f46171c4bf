#!/usr/bin/env bash
# `make conformance`: the upstream [Conformance] specs of [sig-node] Pods, PodTemplates and
# the sig-apps workload controllers (Deployment, ReplicaSet, ReplicationController,
# StatefulSet, DaemonSet, Job, CronJob, DisruptionController) on the kind cluster $CLUSTER,
# first with the webhook enforcing (the default install: deploy/, enforce mode, default
# exemptions), then with its ValidatingWebhookConfiguration removed; the counts of both
# side by side, and every spec whose outcome differs. Fails when a spec that passes
# without the webhook does not pass with it, unless it is a deliberate refusal of the
# seed's rules listed in refusals.txt (and failed on the webhook's denial of the field
# listed there); and when a listed refusal does not happen.
#
# The cluster is made the way `make kind-test` makes it (kind-up, image, kind-load, deploy
# with CLIENT_CA and NETWORK_POLICY_CIDRS) unless $CLUSTER exists with the webhook
# registered, which is then used as it is. The cluster is left running (make kind-down).
# CONFORMANCE_MODES=webhook runs the first half only.
source "$(dirname "$0")/../lib.sh"
cd "$REPO_ROOT"

make_=${MAKE:-make}
modes=${CONFORMANCE_MODES:-webhook no-webhook}
out=${CONFORMANCE_OUT:-$KIND_CACHE/conformance-$CLUSTER}
export CONFORMANCE_OUT=$out
total_start=$(date +%s)

"$HACK_KIND/host.sh"
timed conformance-build "$HACK_KIND/conformance/build.sh" >/dev/null
if ! "$KIND_BIN" get clusters 2>/dev/null | grep -qx "$CLUSTER" ||
  ! kubectl get validatingwebhookconfiguration pod-replace-guard >/dev/null 2>&1; then
  timed kind-up "$make_" --no-print-directory kind-up CLUSTER="$CLUSTER"
  timed image "$make_" --no-print-directory image IMAGE_OFFLINE="${IMAGE_OFFLINE-1}"
  timed kind-load "$make_" --no-print-directory kind-load CLUSTER="$CLUSTER"
  kind_network=$(docker network inspect kind -f '{{range .IPAM.Config}}{{.Subnet}} {{end}}' | tr ' ' '\n' | grep -v : | head -n1)
  timed deploy "$make_" --no-print-directory deploy CLIENT_CA="$KIND_CACHE/admission-$CLUSTER/client-ca.crt" \
    NETWORK_POLICY_CIDRS="$kind_network"
fi
# The controller registers the webhook entry once a replica answers.
for _ in $(seq 1 60); do
  [[ $(kubectl get validatingwebhookconfiguration pod-replace-guard -o jsonpath='{.webhooks[*].name}' 2>/dev/null) ]] && break
  sleep 2
done
timed conformance-images "$HACK_KIND/conformance/images.sh" >/dev/null

rc=0
names=()
for mode in $modes; do
  case $mode in
    webhook) name=with-webhook ;;
    no-webhook) name=without-webhook ;;
    *) die "CONFORMANCE_MODES: webhook and/or no-webhook, not $mode" ;;
  esac
  names+=("$name")
  timed "conformance-$name" "$HACK_KIND/conformance/run.sh" "$mode" "$name" || rc=1
  # The webhook is there again (run.sh created its configuration again) and answering.
  kubectl -n "${NAMESPACE:-pod-replace-guard}" rollout status deployment/pod-replace-guard --timeout=120s >/dev/null
done

echo
echo "== conformance on $CLUSTER (Kubernetes v$K8S_VERSION), output in $out"
for name in "${names[@]}"; do
  [[ -s $out/$name/report.json ]] &&
    python3 "$HACK_KIND/conformance/report.py" summary "$out/$name/report.json" --title "$name" | head -n1
done
if [[ -s $out/with-webhook/report.json && -s $out/without-webhook/report.json ]]; then
  python3 "$HACK_KIND/conformance/report.py" compare "$out/with-webhook/report.json" \
    "$out/without-webhook/report.json" || rc=1
fi
echo "total time: $(( $(date +%s) - total_start ))s"
exit "$rc"
