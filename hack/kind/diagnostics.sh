#!/usr/bin/env bash
# What a failed cluster step needs to be understood, printed to stderr: nodes, every pod,
# recent events, the webhook's pods and logs, and the kubelet's last lines on each node.
source "$(dirname "$0")/lib.sh"
namespace=${NAMESPACE:-pod-replace-guard}
{
  echo "===== diagnostics ($(date -u +%FT%TZ))"
  docker ps -a --format '{{.Names}} {{.Status}} {{.Image}}' || true
  kubectl get nodes -o wide || true
  kubectl get pods -A -o wide || true
  kubectl get events -A --sort-by=.lastTimestamp 2>/dev/null | tail -n 40 || true
  kubectl -n "$namespace" describe deployment,pods -l app.kubernetes.io/name=pod-replace-guard 2>/dev/null | tail -n 80 || true
  kubectl -n "$namespace" logs -l app.kubernetes.io/name=pod-replace-guard --all-containers --prefix --tail=40 2>/dev/null || true
  kubectl get validatingwebhookconfiguration -o wide 2>/dev/null || true
  for node in $("$KIND_BIN" get nodes --name "$CLUSTER" 2>/dev/null); do
    echo "----- $node: kubelet"
    docker exec "$node" journalctl -u kubelet --no-pager -n 25 2>/dev/null || true
  done
} >&2
