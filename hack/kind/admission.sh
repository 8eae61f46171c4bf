#!/usr/bin/env bash
# The API server's client identity for the webhook, in $ADMISSION_DIR (printed):
# client-ca.crt/.key and client.crt/.key (python -m webhook client-cert), the
# kubeconfig that presents them to pod-replace-guard.pod-replace-guard.svc, and the
# AdmissionConfiguration that points ValidatingAdmissionWebhook at that kubeconfig.
# Mounted into the control-plane node at /etc/kubernetes/prg-admission (cluster.yaml).
source "$(dirname "$0")/lib.sh"

dir=$KIND_CACHE/admission-$CLUSTER
namespace=${NAMESPACE:-pod-replace-guard}
python=${PYTHON:-python3}
"$python" -m webhook client-cert --out "$dir" --name kube-apiserver >/dev/null
cat >"$dir/admission.yaml" <<YAML
apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
  - name: ValidatingAdmissionWebhook
    configuration:
      apiVersion: apiserver.config.k8s.io/v1
      kind: WebhookAdmissionConfiguration
      kubeConfigFile: /etc/kubernetes/prg-admission/kubeconfig.yaml
YAML
cat >"$dir/kubeconfig.yaml" <<YAML
apiVersion: v1
kind: Config
users:
  # The webhook's Service name: the API server presents this identity only to it.
  - name: pod-replace-guard.$namespace.svc
    user:
      client-certificate: /etc/kubernetes/prg-admission/client.crt
      client-key: /etc/kubernetes/prg-admission/client.key
YAML
# The API server runs as root in the node; the key stays unreadable to anyone else.
chmod 0755 "$dir"
echo "$dir"
