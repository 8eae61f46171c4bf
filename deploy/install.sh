#!/usr/bin/env bash
# Installs pod-replace-guard into the current kube context: the default flow of
# deploy/README.md (deploy/ rendered with your image, namespace and components).
#
#   make deploy
#   NAMESPACE=pod-replace-guard IMAGE=pod-replace-guard:dev deploy/install.sh
#   deploy/install.sh --render    # print every object it would apply; no cluster needed
#
# Steps: render -> apply everything -> wait for the Deployment -> wait for the webhook
# entry. Nothing here makes key material: the webhook's controller container makes
# the certificates in the cluster, and registers the webhook entry only once a replica
# answers, so an install whose pods never start refuses no pod update (it fails here
# with the reason). Re-running is safe and updates the install in place.
#
# Environment:
#   NAMESPACE        the namespace to install into (default: pod-replace-guard)
#   IMAGE            the webhook image (default: pod-replace-guard:dev)
#   KUBECTL          the kubectl to run (default: kubectl)
#   ROLLOUT_TIMEOUT  how long to wait for the Deployment (default: 180s)
#   REGISTER_TIMEOUT how long to wait, after that, for the webhook entry (default: 60s)
#   CLIENT_CA        a CA file: only clients with a certificate it signed (the API
#                    server, through its admission-control kubeconfig) may call
#                    (deploy/components/client-auth)
#   NETWORK_POLICY_CIDRS  comma-separated CIDRs the API server and the kubelet connect
#                    from: adds the NetworkPolicy (deploy/components/network-policy)
#   JUDGE_SUBRESOURCES  non-empty: judge pods/ephemeralcontainers and pods/resize too
#                    (deploy/components/judge-subresources; denies `kubectl debug`)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

NAMESPACE=${NAMESPACE:-pod-replace-guard}
IMAGE=${IMAGE:-pod-replace-guard:dev}
KUBECTL=${KUBECTL:-kubectl}
ROLLOUT_TIMEOUT=${ROLLOUT_TIMEOUT:-180s}
REGISTER_TIMEOUT=${REGISTER_TIMEOUT:-60s}
CLIENT_CA=${CLIENT_CA:-}
NETWORK_POLICY_CIDRS=${NETWORK_POLICY_CIDRS:-}
JUDGE_SUBRESOURCES=${JUDGE_SUBRESOURCES:-}

# Names fixed by the manifests in deploy/base.
readonly APP=pod-replace-guard
readonly DEFAULT_NAMESPACE=pod-replace-guard
readonly DEPLOYMENT=pod-replace-guard
readonly WEBHOOK_CONFIGURATION=pod-replace-guard

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
[[ $NAMESPACE =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ && ${#NAMESPACE} -le 63 ]] ||
  die "NAMESPACE=$NAMESPACE is not a valid namespace name"
[[ -n $IMAGE && $IMAGE != *[[:space:]]* ]] || die "IMAGE must be an image reference, got '$IMAGE'"
[[ -z $CLIENT_CA || -s $CLIENT_CA ]] || die "CLIENT_CA=$CLIENT_CA is not a readable CA file"
[[ -z $CLIENT_CA ]] || grep -q -- "-----BEGIN CERTIFICATE-----" "$CLIENT_CA" ||
  die "CLIENT_CA=$CLIENT_CA holds no PEM certificate"
for cidr in ${NETWORK_POLICY_CIDRS//,/ }; do
  [[ $cidr =~ ^[0-9a-fA-F:.]+/[0-9]+$ ]] || die "NETWORK_POLICY_CIDRS: '$cidr' is not a CIDR"
done

# --- rendering ----------------------------------------------------------------------
# kustomize edit is not available everywhere, so a throw-away overlay on deploy/ (in a
# temporary directory: nothing is written into the tree) sets the image and, if not
# the defaults, the namespace and the components.
work=$(mktemp -d "${TMPDIR:-/tmp}/pod-replace-guard-install.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/overlay"
# kustomize accepts only relative paths to other kustomizations.
deploy_rel=$(realpath -m --relative-to="$work/overlay" "$here" 2>/dev/null ||
  python3 -c 'import os, sys; print(os.path.relpath(sys.argv[1], sys.argv[2]))' "$here" "$work/overlay")

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

[[ -z $CLIENT_CA ]] || cp "$CLIENT_CA" "$work/overlay/client-ca.crt"
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
    # Renames the Namespace and moves every namespaced object (and the RBAC subjects);
    # the controller builds the webhook entry from PRG_NAMESPACE.
    echo "namespace: \"$NAMESPACE\""
  fi
  echo "configMapGenerator:"
  if [[ $NAMESPACE != "$DEFAULT_NAMESPACE" ]]; then
    echo "  - name: $APP-settings"
    echo "    namespace: $DEFAULT_NAMESPACE"
    echo "    behavior: merge"
    echo "    literals:"
    echo "      - \"PRG_NAMESPACE=$NAMESPACE\""
  fi
  if [[ -n $CLIENT_CA ]]; then
    # The ConfigMap the client-auth component mounts: part of the render, so a GitOps
    # apply of `--render` has everything the pods need.
    echo "  - name: $APP-client-ca"
    echo "    namespace: $DEFAULT_NAMESPACE"
    echo "    files:"
    echo "      - ca.crt=client-ca.crt"
    echo "    options:"
    echo "      disableNameSuffixHash: true"
    echo "      labels:"
    echo "        app.kubernetes.io/name: $APP"
    echo "        app.kubernetes.io/component: webhook"
  fi
  [[ $NAMESPACE != "$DEFAULT_NAMESPACE" || -n $CLIENT_CA ]] || echo "  []"
  echo "patches:"
  if [[ $NAMESPACE != "$DEFAULT_NAMESPACE" ]]; then
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
  [[ $NAMESPACE != "$DEFAULT_NAMESPACE" || -n $NETWORK_POLICY_CIDRS ]] || echo "  []"
} >"$work/overlay/kustomization.yaml"

"$KUBECTL" kustomize "$work/overlay" >"$work/rendered.yaml" ||
  die "cannot render deploy/ with kubectl kustomize"

if $render_only; then
  cat "$work/rendered.yaml"
  exit 0
fi

# --- cluster ------------------------------------------------------------------------
context=$("$KUBECTL" config current-context 2>/dev/null || echo "(none)")
say "installing $IMAGE into namespace $NAMESPACE of kube context $context"
"$KUBECTL" get --raw=/version >/dev/null ||
  die "cannot reach the API server of kube context $context"

generation_before=$("$KUBECTL" -n "$NAMESPACE" get deployment "$DEPLOYMENT" \
  -o jsonpath='{.metadata.generation}' 2>/dev/null || true)

say "applying deploy/ (the webhook configuration is created with no entry: it refuses nothing yet)"
"$KUBECTL" apply -f "$work/rendered.yaml"

generation_after=$("$KUBECTL" -n "$NAMESPACE" get deployment "$DEPLOYMENT" \
  -o jsonpath='{.metadata.generation}')
if [[ -n $generation_before && $generation_before == "$generation_after" ]]; then
  # Same spec, so no rollout: restart so that an image rebuilt under the same tag
  # (make image && make kind-load) is what runs.
  say "the Deployment is unchanged: restarting it to run the current $IMAGE"
  "$KUBECTL" -n "$NAMESPACE" rollout restart deployment/"$DEPLOYMENT"
fi

# diagnose: the pods, why their containers wait, and the controller's last lines.
diagnose() {
  {
    "$KUBECTL" -n "$NAMESPACE" get pods -l app.kubernetes.io/name="$APP" -o wide || true
    "$KUBECTL" -n "$NAMESPACE" get pods -l app.kubernetes.io/name="$APP" -o \
      jsonpath='{range .items[*]}{.metadata.name}{range .status.initContainerStatuses[*]}{"  "}{.name}{": "}{.state.waiting.reason}{" "}{.state.waiting.message}{end}{range .status.containerStatuses[*]}{"  "}{.name}{": "}{.state.waiting.reason}{" "}{.state.waiting.message}{end}{"\n"}{end}' || true
    "$KUBECTL" -n "$NAMESPACE" logs -l app.kubernetes.io/name="$APP" -c controller \
      --tail=10 --prefix || true
  } >&2
}

say "waiting for the Deployment (up to $ROLLOUT_TIMEOUT)"
if ! "$KUBECTL" -n "$NAMESPACE" rollout status deployment/"$DEPLOYMENT" --timeout="$ROLLOUT_TIMEOUT" >&2; then
  diagnose
  die "the webhook's pods did not become ready within $ROLLOUT_TIMEOUT (their state is above); pod updates are not refused: the webhook entry is registered only once a replica answers"
fi

say "waiting for the controller to register the webhook entry (up to $REGISTER_TIMEOUT)"
if ! "$KUBECTL" wait validatingwebhookconfiguration/"$WEBHOOK_CONFIGURATION" \
  --for=jsonpath='{.webhooks[0].name}'=pods.pod-replace-guard.io --timeout="$REGISTER_TIMEOUT" >/dev/null; then
  diagnose
  die "the webhook entry was not registered within $REGISTER_TIMEOUT (the controller's log is above); pod updates are not judged yet"
fi

say "done: pod updates outside the exempt namespaces and $NAMESPACE are judged by pod-replace-guard"
"$KUBECTL" get validatingwebhookconfiguration "$WEBHOOK_CONFIGURATION" >&2
