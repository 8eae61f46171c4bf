#!/usr/bin/env bash
# Runs upstream [Conformance] specs (the e2e.test of the node's release, conformance/build.sh)
# on the kind cluster $CLUSTER, in the current kube context, with the webhook deployed.
#   run.sh webhook NAME      the webhook enforcing, as deployed (default install and exemptions)
#   run.sh no-webhook NAME   the same with ValidatingWebhookConfiguration pod-replace-guard
#                            removed for the run: it is saved first and created again after
#                            (the controller only gets and updates it, so it cannot bring it
#                            back by itself; re-created, the controller keeps it current)
# Output in $CONFORMANCE_OUT/NAME ($KIND_CACHE/conformance-$CLUSTER by default): the ginkgo
# JSON report (report.json, counted by report.py), the JUnit XML, the log.
# Settings:
#   CONFORMANCE_FOCUS   ginkgo focus regex (default: the groups below); the label filter is
#                       always Conformance, so only [Conformance] specs run
#   CONFORMANCE_SKIP    ginkgo skip regex (specs that would pull an image: none known)
#   CONFORMANCE_PROCS   parallel ginkgo processes (default 4; [Serial] specs run alone at the end)
#   CONFORMANCE_TIMEOUT the whole run's limit (default 90m)
source "$(dirname "$0")/../lib.sh"

mode=${1:?usage: run.sh webhook|no-webhook NAME}
name=${2:?usage: run.sh webhook|no-webhook NAME}
# [sig-node] Pods (and Pods Extended), PodTemplates, and the workload controllers of sig-apps.
default_focus='\[sig-node\] (Pods|PodTemplates)\b|\[sig-apps\] (Deployment|ReplicaSet|ReplicationController|StatefulSet|Daemon set|Job|CronJob|DisruptionController)\b'
focus=${CONFORMANCE_FOCUS:-$default_focus}
skip=${CONFORMANCE_SKIP:-}
procs=${CONFORMANCE_PROCS:-4}
out=${CONFORMANCE_OUT:-$KIND_CACHE/conformance-$CLUSTER}/$name
vwc=pod-replace-guard

e2e_bin=$("$HACK_KIND/conformance/build.sh")
rm -rf "$out"
mkdir -p "$out"
kubeconfig=${KUBECONFIG:-$HOME/.kube/config}
kubeconfig=${kubeconfig%%:*}

kubectl get validatingwebhookconfiguration "$vwc" -o json >"$out/vwc.json" ||
  die "no ValidatingWebhookConfiguration $vwc in $(kubectl config current-context): deploy first (make deploy)"
entries=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1])).get("webhooks") or []))' "$out/vwc.json")
((entries > 0)) || die "ValidatingWebhookConfiguration $vwc has no webhook entry yet (the controller registers it once a replica answers)"

restore() {
  # Created again as it was, less what the API server sets.
  python3 -c '
import json, sys
obj = json.load(open(sys.argv[1]))
for key in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"):
    obj["metadata"].pop(key, None)
json.dump(obj, sys.stdout)' "$out/vwc.json" | kubectl create -f - >/dev/null
  log "ValidatingWebhookConfiguration $vwc created again"
}
if [[ $mode == no-webhook ]]; then
  trap 'restore' EXIT
  kubectl delete validatingwebhookconfiguration "$vwc" >/dev/null
  log "ValidatingWebhookConfiguration $vwc deleted for the run (saved in $out/vwc.json)"
elif [[ $mode != webhook ]]; then
  die "mode is webhook or no-webhook, not $mode"
fi

log "conformance ($name, $mode): e2e.test v$K8S_VERSION, $procs processes, focus: $focus"
start=$(date +%s)
rc=0
# --provider=skeleton: no cloud; the specs talk to the cluster through the kubeconfig only.
# Nothing is pulled: the images are in the nodes (images.sh), asked for IfNotPresent.
"$e2e_bin/ginkgo" --procs="$procs" --label-filter=Conformance --focus="$focus" \
  ${skip:+--skip="$skip"} --timeout="${CONFORMANCE_TIMEOUT:-90m}" --no-color --silence-skips \
  --output-dir="$out" --json-report=report.json --junit-report=junit.xml \
  "$e2e_bin/e2e.test" -- \
  --provider=skeleton --kubeconfig="$kubeconfig" --num-nodes=2 \
  --e2e-verify-service-account=false --dump-logs-on-failure=false \
  >"$out/e2e.log" 2>&1 || rc=$?
log "conformance ($name): ginkgo exit $rc after $(( $(date +%s) - start ))s (log: $out/e2e.log)"
[[ -s $out/report.json ]] || { tail -n 40 "$out/e2e.log" >&2; die "no report from ginkgo"; }
# The verdict is report.py's: ginkgo exits 1 on the deliberate refusals too
# (refusals.txt), which report.py accepts only as the webhook's denial of their field; a
# suite-level failure (BeforeSuite, AfterSuite) counts as a failure there.
counted=0
python3 "$HACK_KIND/conformance/report.py" summary "$out/report.json" --title "conformance $name ($mode)" || counted=$?
if ((counted != 0)); then
  # Ginkgo's own summary of the failures (spec, file:line, the assertion).
  sed -n '/^Summarizing [0-9]* Failure/,$p' "$out/e2e.log" | head -n 60 >&2
  grep -m 20 -E '\[(FAILED|PANICKED|TIMEDOUT|INTERRUPTED)\]' "$out/e2e.log" >&2 || true
  exit 1
fi
