#!/usr/bin/env bash
# Removes pod-replace-guard from the current kube context (either flow): the webhook
# configuration first, so no pod update waits on a webhook that is going away, then
# the cluster-scoped RBAC objects, then the namespace with everything in it
# (Deployment, the certificate Secret, cert-manager Issuers and Certificates).
#
#   NAMESPACE=pod-replace-guard deploy/uninstall.sh
set -euo pipefail

NAMESPACE=${NAMESPACE:-pod-replace-guard}
KUBECTL=${KUBECTL:-kubectl}

say() { printf '==> %s\n' "$*" >&2; }

say "webhook configuration pod-replace-guard (pod updates are no longer judged)"
"$KUBECTL" delete validatingwebhookconfiguration pod-replace-guard --ignore-not-found
say "cluster role and binding pod-replace-guard-webhook-configuration"
"$KUBECTL" delete clusterrolebinding pod-replace-guard-webhook-configuration --ignore-not-found
"$KUBECTL" delete clusterrole pod-replace-guard-webhook-configuration --ignore-not-found
say "namespace $NAMESPACE"
"$KUBECTL" delete namespace "$NAMESPACE" --ignore-not-found --wait=true --timeout=180s
say "done"
