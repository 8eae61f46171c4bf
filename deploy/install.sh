#!/usr/bin/env bash
# Installs pod-replace-guard into the current kube context: the default flow of
# deploy/README.md, with certificates made by `python -m webhook certs`.
#
#   make deploy
#   PYTHON=.venv/bin/python NAMESPACE=pod-replace-guard IMAGE=pod-replace-guard:dev deploy/install.sh
#   deploy/install.sh --render    # print what would be applied (no Secret); no cluster needed
#
# Steps: certificates (the CA in $CERT_DIR is reused, so the caBundle stays valid
# across runs) -> Namespace -> TLS Secret -> everything but the webhook configuration
# -> wait for the Deployment -> the ValidatingWebhookConfiguration with the caBundle.
# The webhook configuration goes last: with failurePolicy Fail, registering it before
# a replica answers would refuse every pod update in the judged namespaces.
# Re-running is safe and updates the install in place.
#
# Environment:
#   PYTHON           a Python with the webhook package installed (default: python3)
#   NAMESPACE        the namespace to install into (default: pod-replace-guard)
#   IMAGE            the webhook image (default: pod-replace-guard:dev)
#   KUBECTL          the kubectl to run (default: kubectl)
#   CERT_DIR         where the CA and serving certificate are kept (default: .deploy-certs)
#   ROLLOUT_TIMEOUT  how long to wait for the Deployment (default: 180s)
#   CERT_DAYS        validity of the serving certificate in days (default: 365); run
#                    again before it ends to renew it (the CA, and so the caBundle, stay)
#   CLIENT_CA        a CA file: only clients with a certificate it signed (the API
#                    server, through its admission-control kubeconfig) may call
#                    (deploy/components/client-auth)
#   NETWORK_POLICY_CIDRS  comma-separated CIDRs the API server and the kubelet connect
#                    from: adds the NetworkPolicy (deploy/components/network-policy)
#   JUDGE_SUBRESOURCES  non-empty: judge pods/ephemeralcontainers and pods/resize too
#                    (deploy/components/judge-subresources; denies `kubectl debug`)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")

PYTHON=${PYTHON:-python3}
NAMESPACE=${NAMESPACE:-pod-replace-guard}
IMAGE=${IMAGE:-pod-replace-guard:dev}
KUBECTL=${KUBECTL:-kubectl}
CERT_DIR=${CERT_DIR:-$root/.deploy-certs}
ROLLOUT_TIMEOUT=${ROLLOUT_TIMEOUT:-180s}
CERT_DAYS=${CERT_DAYS:-365}
CLIENT_CA=${CLIENT_CA:-}
NETWORK_POLICY_CIDRS=${NETWORK_POLICY_CIDRS:-}
JUDGE_SUBRESOURCES=${JUDGE_SUBRESOURCES:-}

# Names fixed by the manifests in deploy/base.
readonly APP=pod-replace-guard
readonly DEFAULT_NAMESPACE=pod-replace-guard
readonly SERVICE=pod-replace-guard
readonly DEPLOYMENT=pod-replace-guard
readonly SECRET=pod-replace-guard-tls
readonly WEBHOOK_CONFIGURATION=pod-replace-guard
readonly COMPONENT=app.kubernetes.io/component

render_only=false
case "${1:-}" in
  "") ;;
  --render) render_only=true ;;
  -h | --help)
    sed -n '2,/^set -euo pipefail/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
    exit 0
    ;;
  *)
    echo "install.sh: unknown argument: $1 (try --help)" >&2
    exit 2
    ;;
esac

say() { printf '==> %s\n' "$*" >&2; }
die() {
  printf 'install.sh: error: %s\n' "$*" >&2
  exit 1
}

command -v "$KUBECTL" >/dev/null 2>&1 || die "kubectl not found (KUBECTL=$KUBECTL)"
"$PYTHON" -c 'import webhook' 2>/dev/null ||
  die "PYTHON=$PYTHON cannot import the webhook package (run 'make install' and use .venv/bin/python)"
[[ $NAMESPACE =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ && ${#NAMESPACE} -le 63 ]] ||
  die "NAMESPACE=$NAMESPACE is not a valid namespace name"
[[ -n $IMAGE && $IMAGE != *[[:space:]]* ]] || die "IMAGE must be an image reference, got '$IMAGE'"

# --- certificates -----------------------------------------------------------------
say "certificates for $SERVICE.$NAMESPACE.svc in $CERT_DIR (the CA there is reused)"
ca_bundle=$("$PYTHON" -m webhook certs --out "$CERT_DIR" --service "$SERVICE" --namespace "$NAMESPACE" \
  --days "$CERT_DAYS")
[[ -z $CLIENT_CA || -s $CLIENT_CA ]] || die "CLIENT_CA=$CLIENT_CA is not a readable CA file"
for cidr in ${NETWORK_POLICY_CIDRS//,/ }; do
  [[ $cidr =~ ^[0-9a-fA-F:.]+/[0-9]+$ ]] || die "NETWORK_POLICY_CIDRS: '$cidr' is not a CIDR"
done
[[ -n $ca_bundle ]] || die "python -m webhook certs printed no caBundle"
for file in tls.crt tls.key ca.crt; do
  [[ -s $CERT_DIR/$file ]] || die "$CERT_DIR/$file is missing after generating certificates"
done

# --- rendering ----------------------------------------------------------------------
# kustomize edit is not available everywhere, so a throw-away overlay on deploy/
# sets the image, the caBundle and, if not the default, the namespace.
work=$(mktemp -d "${TMPDIR:-/tmp}/pod-replace-guard-install.XXXXXX")
trap 'rm -rf "$work"' EXIT
# kustomize accepts only relative paths to other kustomizations.
deploy_rel=$("$PYTHON" -c 'import os, sys; print(os.path.relpath(sys.argv[1], sys.argv[2]))' "$here" "$work/overlay")

# IMAGE as kustomize's images: fields (name[:tag] or name[@digest]).
image_name=$IMAGE image_tag="" image_digest=""
if [[ $IMAGE == *@* ]]; then
  image_name=${IMAGE%%@*}
  image_digest=${IMAGE#*@}
fi
if [[ ${image_name##*/} == *:* ]]; then
  image_tag=${image_name##*:}
  image_name=${image_name%:*}
elif [[ -z $image_digest ]]; then
  image_tag=latest # what a reference without a tag means
fi

# write_overlay CA_BUNDLE: the overlay in $work/overlay, with that caBundle.
write_overlay() {
  local bundle=$1 dir=$work/overlay
  mkdir -p "$dir"
  {
    echo "apiVersion: kustomize.config.k8s.io/v1beta1"
    echo "kind: Kustomization"
    echo "resources:"
    echo "  - $deploy_rel"
    if [[ -n $CLIENT_CA || -n $NETWORK_POLICY_CIDRS || -n $JUDGE_SUBRESOURCES ]]; then
      echo "components:"
      [[ -z $CLIENT_CA ]] || echo "  - $deploy_rel/components/client-auth"
      [[ -z $NETWORK_POLICY_CIDRS ]] || echo "  - $deploy_rel/components/network-policy"
      [[ -z $JUDGE_SUBRESOURCES ]] || echo "  - $deploy_rel/components/judge-subresources"
    fi
    echo "images:"
    echo "  - name: $APP"
    echo "    newName: \"$image_name\""
    [[ -z $image_tag ]] || echo "    newTag: \"$image_tag\""
    [[ -z $image_digest ]] || echo "    digest: \"$image_digest\""
    if [[ $NAMESPACE != "$DEFAULT_NAMESPACE" ]]; then
      # Renames the Namespace and moves every namespaced object and the webhook's
      # clientConfig.service; the patches below fix what kustomize does not know.
      echo "namespace: \"$NAMESPACE\""
      echo "configMapGenerator:"
      echo "  - name: $APP"
      echo "    namespace: $DEFAULT_NAMESPACE"
      echo "    behavior: merge"
      echo "    literals:"
      echo "      - \"PRG_NAMESPACE=$NAMESPACE\""
    fi
    echo "patches:"
    echo "  - target:"
    echo "      kind: ValidatingWebhookConfiguration"
    echo "      name: $WEBHOOK_CONFIGURATION"
    echo "    patch: |-"
    echo "      - op: add"
    echo "        path: /webhooks/0/clientConfig/caBundle"
    echo "        value: \"$bundle\""
    if [[ $NAMESPACE != "$DEFAULT_NAMESPACE" ]]; then
      echo "      - op: test"
      echo "        path: /webhooks/0/namespaceSelector/matchExpressions/0/values/2"
      echo "        value: \"$DEFAULT_NAMESPACE\""
      echo "      - op: replace"
      echo "        path: /webhooks/0/namespaceSelector/matchExpressions/0/values/2"
      echo "        value: \"$NAMESPACE\""
      echo "  - target:"
      echo "      kind: Namespace"
      echo "    patch: |-"
      echo "      - op: replace"
      echo "        path: /metadata/labels/kubernetes.io~1metadata.name"
      echo "        value: \"$NAMESPACE\""
    fi
    if [[ -n $NETWORK_POLICY_CIDRS ]]; then
      echo "  - target:"
      echo "      kind: NetworkPolicy"
      echo "      name: $APP"
      echo "    patch: |-"
      local cidr rule
      for rule in 0 1; do
        echo "      - op: remove"
        echo "        path: /spec/ingress/$rule/from/0"
        for cidr in ${NETWORK_POLICY_CIDRS//,/ }; do
          echo "      - op: add"
          echo "        path: /spec/ingress/$rule/from/0"
          echo "        value: {ipBlock: {cidr: \"$cidr\"}}"
        done
      done
    fi
  } >"$dir/kustomization.yaml"
}

write_overlay "$ca_bundle"
"$KUBECTL" kustomize "$work/overlay" >"$work/rendered.yaml" ||
  die "cannot render deploy/ with kubectl kustomize"

if $render_only; then
  cat "$work/rendered.yaml"
  exit 0
fi

# apply_part SELECTOR: apply the rendered objects whose labels match SELECTOR.
apply_part() {
  "$KUBECTL" apply -f "$work/rendered.yaml" -l "$1"
}

# --- cluster ------------------------------------------------------------------------
context=$("$KUBECTL" config current-context 2>/dev/null || echo "(none)")
say "installing $IMAGE into namespace $NAMESPACE of kube context $context"
"$KUBECTL" get --raw=/version >/dev/null ||
  die "cannot reach the API server of kube context $context"

say "namespace"
apply_part "$COMPONENT=namespace"

# If the webhook configuration exists with another CA (the CA in $CERT_DIR was
# replaced or lost), trust both CAs until the new certificate is served, so pod
# updates are not refused during the rollout.
old_bundle=$("$KUBECTL" get validatingwebhookconfiguration "$WEBHOOK_CONFIGURATION" \
  -o jsonpath='{.webhooks[0].clientConfig.caBundle}' 2>/dev/null || true)
if [[ -n $old_bundle && $old_bundle != "$ca_bundle" ]]; then
  say "the installed webhook configuration trusts another CA: trusting both during the rollout"
  both=$("$PYTHON" -c '
import base64, sys
pems = [base64.b64decode(b).strip() + b"\n" for b in sys.argv[1:]]
print(base64.b64encode(b"".join(pems)).decode())' "$old_bundle" "$ca_bundle")
  write_overlay "$both"
  "$KUBECTL" kustomize "$work/overlay" | "$KUBECTL" apply -f - -l "$COMPONENT=webhook-configuration"
fi

say "TLS Secret $NAMESPACE/$SECRET"
"$KUBECTL" -n "$NAMESPACE" create secret generic "$SECRET" \
  --type=kubernetes.io/tls \
  --from-file=tls.crt="$CERT_DIR/tls.crt" \
  --from-file=tls.key="$CERT_DIR/tls.key" \
  --from-file=ca.crt="$CERT_DIR/ca.crt" \
  --dry-run=client -o yaml |
  "$KUBECTL" label --local -f - -o yaml \
    app.kubernetes.io/name="$APP" "$COMPONENT=webhook" |
  "$KUBECTL" apply -f -

if [[ -n $CLIENT_CA ]]; then
  say "client CA ConfigMap $NAMESPACE/$APP-client-ca (only the API server may call)"
  "$KUBECTL" -n "$NAMESPACE" create configmap "$APP-client-ca" --from-file=ca.crt="$CLIENT_CA" \
    --dry-run=client -o yaml |
    "$KUBECTL" label --local -f - -o yaml app.kubernetes.io/name="$APP" "$COMPONENT=webhook" |
    "$KUBECTL" apply -f -
fi

generation_before=$("$KUBECTL" -n "$NAMESPACE" get deployment "$DEPLOYMENT" \
  -o jsonpath='{.metadata.generation}' 2>/dev/null || true)

say "the webhook (everything but the webhook configuration)"
apply_part "$COMPONENT!=webhook-configuration"

generation_after=$("$KUBECTL" -n "$NAMESPACE" get deployment "$DEPLOYMENT" \
  -o jsonpath='{.metadata.generation}')
if [[ -n $generation_before && $generation_before == "$generation_after" ]]; then
  # Same spec, so no rollout: restart so that an image rebuilt under the same tag
  # (make image && make kind-load) is what runs.
  say "the Deployment is unchanged: restarting it to run the current $IMAGE"
  "$KUBECTL" -n "$NAMESPACE" rollout restart deployment/"$DEPLOYMENT"
fi

say "waiting for the Deployment (up to $ROLLOUT_TIMEOUT)"
if ! "$KUBECTL" -n "$NAMESPACE" rollout status deployment/"$DEPLOYMENT" --timeout="$ROLLOUT_TIMEOUT"; then
  echo "install.sh: the Deployment did not become ready; its pods and recent logs:" >&2
  "$KUBECTL" -n "$NAMESPACE" get pods -l app.kubernetes.io/name="$APP" -o wide >&2 || true
  "$KUBECTL" -n "$NAMESPACE" describe pods -l app.kubernetes.io/name="$APP" >&2 || true
  "$KUBECTL" -n "$NAMESPACE" logs -l app.kubernetes.io/name="$APP" --all-containers \
    --tail=50 --prefix >&2 || true
  die "the webhook configuration was not applied: pod updates are not judged yet"
fi

say "webhook configuration $WEBHOOK_CONFIGURATION (caBundle injected)"
apply_part "$COMPONENT=webhook-configuration"

say "done: pod updates outside kube-system, kube-node-lease and $NAMESPACE are judged by pod-replace-guard"
"$KUBECTL" get validatingwebhookconfiguration "$WEBHOOK_CONFIGURATION" >&2
