"""deploy/, the Dockerfile and the workflows: rendered with kubectl kustomize and checked.

The security properties of the Deployment, the shape of the webhook configuration,
and that the manifests agree with the webhook's own settings (webhook.settings): the
exempt identities in matchConditions, the excluded namespaces, the ConfigMap's keys,
the termination grace against gunicorn's graceful timeout. The real API server's
verdict on these manifests is the end-to-end suite's (tests/e2e/test_manifests.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from webhook.registration import CANARY_LABEL
from webhook.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
FLOWS = ["deploy", "deploy/overlays/cert-manager"]
NAME = "pod-replace-guard"
NAMESPACE = "pod-replace-guard"
TLS_SECRET = "pod-replace-guard-tls"
WEBHOOK_NAME = "pods.pod-replace-guard.io"
NAME_LABEL = "app.kubernetes.io/name"
COMPONENT_LABEL = "app.kubernetes.io/component"
CLUSTER_SCOPED = {
    "Namespace", "ValidatingWebhookConfiguration", "ClusterRole", "ClusterRoleBinding"
}  # fmt: skip
CERTIFICATE_SECRET = "pod-replace-guard-certificates"
CANARY = "pod-replace-guard-canary"

Doc = dict[str, Any]


def find_kubectl() -> str | None:
    """$KUBECTL, kubectl on PATH, or the one built for the end-to-end suite."""
    explicit = os.environ.get("KUBECTL")
    if explicit:
        return explicit
    found = shutil.which("kubectl")
    if found:
        return found
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / NAME
    built = sorted(cache.glob("k8s-v*/bin/kubectl"))
    return str(built[-1]) if built else None


def render(kubectl: str, directory: str) -> list[Doc]:
    result = subprocess.run(
        [kubectl, "kustomize", str(REPO / directory)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, f"kubectl kustomize {directory} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="session")
def rendered(kubectl: str) -> dict[str, list[Doc]]:
    return {flow: render(kubectl, flow) for flow in FLOWS}


@pytest.fixture(scope="session")
def docs(rendered: dict[str, list[Doc]]) -> list[Doc]:
    """The default flow, ``kubectl kustomize deploy/``."""
    return rendered["deploy"]


def find(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    matches = [
        doc
        for doc in docs
        if doc["kind"] == kind and (name is None or doc["metadata"]["name"] == name)
    ]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def pod_spec(docs: list[Doc]) -> Doc:
    spec: Doc = find(docs, "Deployment", NAME)["spec"]["template"]["spec"]
    return spec


def container(docs: list[Doc]) -> Doc:
    """The webhook container (the first; the controller is beside it)."""
    containers = pod_spec(docs)["containers"]
    assert [c["name"] for c in containers] == ["webhook", "controller"]
    first: Doc = containers[0]
    return first


def all_containers(docs: list[Doc]) -> list[Doc]:
    spec = pod_spec(docs)
    return [*spec.get("initContainers", []), *spec["containers"]]


def webhook(docs: list[Doc]) -> Doc:
    """The entry the controller registers: built from the deployed settings (the
    manifest itself names no entry)."""
    from webhook.registration import webhook_entry

    configuration = find(docs, "ValidatingWebhookConfiguration", NAME)
    assert "webhooks" not in configuration, "the install must create no entry"
    return webhook_entry(deployed_settings(docs), "")


def configmap_settings(docs: list[Doc]) -> dict[str, str]:
    """The ConfigMap the Deployment takes its PRG_* variables from."""
    refs = [ref["configMapRef"]["name"] for ref in container(docs).get("envFrom", [])]
    assert len(refs) == 1, "settings come from one ConfigMap"
    data: dict[str, str] = find(docs, "ConfigMap", refs[0])["data"]
    return data


def container_env(docs: list[Doc]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container(docs).get("env", [])}


def deployed_settings(docs: list[Doc]) -> Settings:
    """The Settings the webhook starts with: the ConfigMap, then the container's env."""
    return load_settings(environ={**configmap_settings(docs), **container_env(docs)})


def cel_strings(expression: str) -> set[str]:
    return set(re.findall(r"'([^']*)'", expression)) | set(re.findall(r'"([^"]*)"', expression))


# --- every flow -----------------------------------------------------------------------


@pytest.mark.parametrize("flow", FLOWS)
def test_every_resource_is_labelled_and_in_the_webhook_namespace(
    rendered: dict[str, list[Doc]], flow: str
) -> None:
    docs = rendered[flow]
    assert docs, f"{flow} renders nothing"
    for doc in docs:
        what = f"{flow}: {doc['kind']} {doc['metadata']['name']}"
        labels = doc["metadata"].get("labels", {})
        assert labels.get(NAME_LABEL) == NAME, what
        assert labels.get(COMPONENT_LABEL), what
        if doc["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in doc["metadata"], what
        else:
            assert doc["metadata"].get("namespace") == NAMESPACE, what
    configuration = find(docs, "ValidatingWebhookConfiguration")
    # install.sh applies the webhook configuration last, selecting it by this label.
    assert configuration["metadata"]["labels"][COMPONENT_LABEL] == "webhook-configuration"
    others = [d for d in docs if d["kind"] != "ValidatingWebhookConfiguration"]
    assert all(d["metadata"]["labels"][COMPONENT_LABEL] != "webhook-configuration" for d in others)


@pytest.mark.parametrize("flow", FLOWS)
def test_the_only_secret_rendered_is_the_empty_certificate_secret(
    rendered: dict[str, list[Doc]], flow: str
) -> None:
    """No key material at render time: the controller fills the Secret in the cluster
    (deploy/); cert-manager's flow renders none at all."""
    secrets = [doc for doc in rendered[flow] if doc["kind"] == "Secret"]
    if flow == "deploy":
        (secret,) = secrets
        assert secret["metadata"]["name"] == CERTIFICATE_SECRET
        assert secret["type"] == "Opaque"
        assert "data" not in secret
        assert "stringData" not in secret
    else:
        assert secrets == []


def test_no_key_material_is_committed_under_deploy() -> None:
    for path in sorted(DEPLOY.rglob("*")):
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        assert "PRIVATE KEY" not in text, path
        if path.name != "install.sh":  # it checks that CLIENT_CA holds one
            assert "BEGIN CERTIFICATE" not in text, path
        assert not re.search(r"\bLS0tLS1CRUdJTi", text), f"{path}: base64 PEM"
        if path.suffix in {".yaml", ".yml"}:
            for doc in yaml.safe_load_all(text):
                if isinstance(doc, dict) and doc.get("kind") == "Secret":
                    assert not doc.get("data"), f"{path} holds a Secret with data"
                    assert not doc.get("stringData"), f"{path} holds a Secret with data"


# --- the Deployment ---------------------------------------------------------------------


def test_pod_runs_as_non_root_with_runtime_default_seccomp(docs: list[Doc]) -> None:
    context = pod_spec(docs)["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] != 0
    assert context["runAsGroup"] != 0
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}


def test_container_is_locked_down(docs: list[Doc]) -> None:
    context = container(docs)["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context.get("privileged", False) is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert not context["capabilities"].get("add")
    assert context.get("runAsUser", pod_spec(docs)["securityContext"]["runAsUser"]) != 0


def test_the_token_reaches_only_the_controller_and_no_host_access(docs: list[Doc]) -> None:
    spec = pod_spec(docs)
    assert find(docs, "ServiceAccount", NAME)["automountServiceAccountToken"] is False
    assert spec["serviceAccountName"] == NAME
    assert spec["automountServiceAccountToken"] is False
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert not spec.get(key), key
    assert all("hostPath" not in volume for volume in spec["volumes"])
    token_volumes = {
        v["name"] for v in spec["volumes"]
        if any("serviceAccountToken" in src for src in v.get("projected", {}).get("sources", []))
    }  # fmt: skip
    assert token_volumes == {"kube-api-access"}
    holders = {
        c["name"] for c in all_containers(docs)
        if any(m["name"] in token_volumes for m in c.get("volumeMounts", []))
    }  # fmt: skip
    assert holders == {"certificates", "controller"}, "the webhook container holds no token"


def test_permissions_are_one_secret_one_configuration_and_the_canary_by_name(
    docs: list[Doc],
) -> None:
    """docs/operations.md, "Permissions": exactly these, and nothing that can create."""
    rules = {
        (doc["kind"], doc["metadata"]["name"]): doc["rules"]
        for doc in docs
        if doc["kind"] in {"Role", "ClusterRole"}
    }
    assert rules == {
        ("Role", "pod-replace-guard-certificates"): [
            {"apiGroups": [""], "resources": ["secrets"],
             "resourceNames": [CERTIFICATE_SECRET], "verbs": ["get", "update"]}
        ],
        ("Role", "pod-replace-guard-canary"): [
            {"apiGroups": [""], "resources": ["configmaps"],
             "resourceNames": [CANARY], "verbs": ["patch"]}
        ],
        ("ClusterRole", "pod-replace-guard-webhook-configuration"): [
            {"apiGroups": ["admissionregistration.k8s.io"],
             "resources": ["validatingwebhookconfigurations"],
             "resourceNames": [NAME], "verbs": ["get", "update"]}
        ],
    }  # fmt: skip
    for doc in docs:
        if doc["kind"] in {"RoleBinding", "ClusterRoleBinding"}:
            assert doc["subjects"] == [
                {"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}
            ]
    settings = deployed_settings(docs)
    assert settings.cert_secret == CERTIFICATE_SECRET
    assert settings.webhook_configuration == NAME
    assert settings.canary_configmap == CANARY
    canary = find(docs, "ConfigMap", CANARY)
    assert canary["metadata"]["labels"][CANARY_LABEL] == "true"
    assert "data" not in canary


def test_resources_are_requested_and_memory_limited(docs: list[Doc]) -> None:
    resources = container(docs)["resources"]
    assert resources["requests"]["cpu"]
    assert resources["requests"]["memory"]
    assert resources["limits"]["memory"]


def test_probes_use_the_health_listener(docs: list[Doc]) -> None:
    """The probes go to the plain-HTTP health port (PRG_HEALTH_BIND): off the admission
    port, so neither a flood of it nor client-certificate authentication touches them."""
    main = container(docs)
    ports = {port["name"]: port["containerPort"] for port in main["ports"]}
    health_port = int(deployed_settings(docs).health_port)
    assert ports["health"] == health_port != ports["https"]
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = main[probe]["httpGet"]
        assert get["path"] == path, probe
        assert get["scheme"] == "HTTP", probe
        assert ports.get(get["port"], get["port"]) == health_port, probe


def test_termination_grace_outlasts_gunicorns_graceful_timeout(docs: list[Doc]) -> None:
    grace = pod_spec(docs)["terminationGracePeriodSeconds"]
    pre_stop = container(docs).get("lifecycle", {}).get("preStop", {})
    sleep = pre_stop.get("sleep", {}).get("seconds", 0)
    assert grace > Settings().graceful_timeout
    assert grace > deployed_settings(docs).graceful_timeout + sleep


def test_replicas_spread_and_protected(docs: list[Doc]) -> None:
    deployment = find(docs, "Deployment", NAME)
    spec = deployment["spec"]
    assert spec["replicas"] >= 2
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod_labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= pod_labels.items()
    anti = pod_spec(docs)["affinity"]["podAntiAffinity"]
    terms = anti["preferredDuringSchedulingIgnoredDuringExecution"]
    assert any(
        term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
        and term["podAffinityTerm"]["labelSelector"]["matchLabels"].items() <= pod_labels.items()
        for term in terms
    )
    assert pod_spec(docs)["priorityClassName"] == "system-cluster-critical"
    pdb = find(docs, "PodDisruptionBudget", NAME)
    assert pdb["apiVersion"] == "policy/v1"
    assert 1 <= pdb["spec"]["minAvailable"] < spec["replicas"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_image_and_arguments(docs: list[Doc]) -> None:
    main = container(docs)
    assert main["image"] == "pod-replace-guard:dev"
    assert main["imagePullPolicy"] == "IfNotPresent"
    assert main["args"] == ["serve"]
    annotations = find(docs, "Deployment", NAME)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == "8081"
    assert annotations["prometheus.io/scheme"] == "http"
    assert annotations["prometheus.io/path"] == "/metrics"


def test_certificate_files_and_writable_tmp_are_wired(docs: list[Doc]) -> None:
    """The controller writes the files (in memory) that the webhook reads, read-only."""
    spec = pod_spec(docs)
    main = container(docs)
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    mounts = {mount["mountPath"]: mount for mount in main["volumeMounts"]}
    settings = deployed_settings(docs)
    tls_mount = mounts[settings.cert_dir]
    assert settings.cert_dir == "/etc/pod-replace-guard/tls"
    assert tls_mount["readOnly"] is True
    assert volumes[tls_mount["name"]]["emptyDir"]["medium"] == "Memory"
    for writer in (c for c in all_containers(docs) if c["name"] != "webhook"):
        assert writer["args"][0] == "controller"
        env = {e["name"]: e["value"] for e in writer["env"]}
        assert env["PRG_CERT_DIR"] == settings.cert_dir
        writes = {m["mountPath"]: m for m in writer["volumeMounts"]}[settings.cert_dir]
        assert writes["name"] == tls_mount["name"]
        assert not writes.get("readOnly")
        assert writer["securityContext"] == main["securityContext"]
        assert writer["image"] == main["image"]
    tmp = mounts["/tmp"]
    assert "emptyDir" in volumes[tmp["name"]]
    assert container_env(docs)["PROMETHEUS_MULTIPROC_DIR"].startswith("/tmp/")
    port = int(settings.bind.rpartition(":")[2])
    assert {"name": "https", "containerPort": port, "protocol": "TCP"} in main["ports"]


def test_configmap_holds_only_known_valid_settings(docs: list[Doc]) -> None:
    data = configmap_settings(docs)
    assert set(data) >= {
        "PRG_MODE",
        "PRG_EXEMPT_USERS",
        "PRG_EXEMPT_GROUPS",
        "PRG_EXEMPT_NAMESPACES",
        "PRG_NAMESPACE",
        "PRG_LOG_LEVEL",
    }
    assert all(key.startswith("PRG_") for key in data)
    settings = load_settings(environ=data)  # raises ConfigError on unknown or bad keys
    assert settings.mode == "enforce"
    assert settings.namespace == NAMESPACE
    defaults = Settings()
    assert settings.exempt_users == defaults.exempt_users
    assert settings.exempt_groups == defaults.exempt_groups
    assert set(settings.exempt_namespaces) >= set(defaults.exempt_namespaces)


def test_service_sends_443_to_the_https_container_port(docs: list[Doc]) -> None:
    service = find(docs, "Service", NAME)
    pod_labels = find(docs, "Deployment", NAME)["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    by_name = {port["name"]: port for port in service["spec"]["ports"]}
    assert set(by_name) == {"https", "metrics"}
    assert (by_name["https"]["port"], by_name["https"]["targetPort"]) == (443, "https")
    assert by_name["metrics"]["targetPort"] == "health"
    ports = {p["name"]: p["containerPort"] for p in container(docs)["ports"]}
    assert ports["https"] == 8443


def test_namespace_is_excluded_by_its_immutable_name_label(docs: list[Doc]) -> None:
    namespace = find(docs, "Namespace", NAMESPACE)
    labels = namespace["metadata"]["labels"]
    assert labels["kubernetes.io/metadata.name"] == NAMESPACE
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


# --- the ValidatingWebhookConfiguration ---------------------------------------------------


def test_webhook_judges_pod_updates_only(docs: list[Doc]) -> None:
    hook = webhook(docs)
    assert hook["name"] == WEBHOOK_NAME
    assert hook["rules"] == [
        {
            "operations": ["UPDATE"],
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "resources": ["pods"],
            "scope": "Namespaced",
        }
    ]
    assert hook["matchPolicy"] == "Equivalent"


def test_webhook_fails_closed_fast_without_side_effects(docs: list[Doc]) -> None:
    hook = webhook(docs)
    assert hook["failurePolicy"] == "Fail"
    assert hook["sideEffects"] == "None"
    assert 2 <= hook["timeoutSeconds"] <= 5
    assert hook["admissionReviewVersions"] == ["v1"]


def test_webhook_excludes_system_and_own_namespaces(docs: list[Doc]) -> None:
    hook = webhook(docs)
    assert "objectSelector" not in hook, "pod labels are user-editable: no opt-out by label"
    [expression] = hook["namespaceSelector"]["matchExpressions"]
    assert expression["key"] == "kubernetes.io/metadata.name"
    assert expression["operator"] == "NotIn"
    excluded = set(expression["values"])
    assert excluded >= {"kube-system", "kube-node-lease", NAMESPACE}
    assert excluded >= Settings().judged_namespaces_excluded
    assert excluded == deployed_settings(docs).judged_namespaces_excluded
    assert "matchLabels" not in hook["namespaceSelector"]


def test_match_conditions_skip_the_exempt_identities(docs: list[Doc]) -> None:
    conditions = webhook(docs)["matchConditions"]
    assert len({condition["name"] for condition in conditions}) == len(conditions)
    users = [c["expression"] for c in conditions if "userInfo.username" in c["expression"]]
    groups = [c["expression"] for c in conditions if "userInfo.groups" in c["expression"]]
    defaults = Settings()
    deployed = deployed_settings(docs)
    assert len(users) == 1
    assert cel_strings(users[0]) == set(defaults.exempt_users) == set(deployed.exempt_users)
    # Exempt groups: none by default, so no group condition (a group condition with an
    # empty list would be dead CEL); with some, one condition naming exactly them.
    if defaults.exempt_groups or deployed.exempt_groups:
        assert len(groups) == 1
        assert cel_strings(groups[0]) == set(defaults.exempt_groups) == set(deployed.exempt_groups)
    else:
        assert groups == []
    assert len(conditions) == len(users) + len(groups)
    for expression in users + groups:
        # An absent field must not be an evaluation error (refused under Fail).
        assert expression.lstrip().startswith("!has(request.userInfo."), expression


def test_webhook_calls_the_service(docs: list[Doc]) -> None:
    config = webhook(docs)["clientConfig"]
    service = find(docs, "Service", NAME)
    assert "url" not in config
    assert config["caBundle"] == "", "the controller fills it in the cluster"
    assert config["service"] == {
        "namespace": service["metadata"]["namespace"],
        "name": service["metadata"]["name"],
        "path": "/validate",
        "port": service["spec"]["ports"][0]["port"],
    }


# --- the cert-manager overlay -----------------------------------------------------------


def test_cert_manager_overlay_issues_the_mounted_secret(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["deploy/overlays/cert-manager"]
    # The controller makes no certificates: it reads the mounted Secret's ca.crt.
    settings = deployed_settings(docs)
    assert settings.cert_secret == ""
    assert "initContainers" not in pod_spec(docs)
    volumes = {volume["name"]: volume for volume in pod_spec(docs)["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == TLS_SECRET
    for each in pod_spec(docs)["containers"]:
        mount = {m["mountPath"]: m for m in each["volumeMounts"]}[settings.cert_dir]
        assert (mount["name"], mount["readOnly"]) == ("tls", True)
    # Otherwise deploy/'s objects, less the certificate Secret and its Role.
    kept = [
        d for d in rendered["deploy"]
        if d["metadata"]["name"] != CERTIFICATE_SECRET and d["kind"] != "Deployment"
        and d["kind"] != "ConfigMap"
    ]  # fmt: skip
    others = [
        d for d in docs
        if d["apiVersion"] != "cert-manager.io/v1" and d["kind"] not in ("Deployment", "ConfigMap")
    ]  # fmt: skip
    assert others == kept
    (serving,) = [
        d for d in docs if d["kind"] == "Certificate" and d["spec"]["secretName"] == TLS_SECRET
    ]
    service = webhook(docs)["clientConfig"]["service"]
    assert f"{service['name']}.{service['namespace']}.svc" in serving["spec"]["dnsNames"]
    assert "server auth" in serving["spec"]["usages"]
    # The chain: serving Certificate -> CA Issuer -> CA Certificate -> self-signed Issuer.
    ca_issuer = find(docs, "Issuer", serving["spec"]["issuerRef"]["name"])
    ca_secret = ca_issuer["spec"]["ca"]["secretName"]
    ca_certificates = [
        d for d in docs if d["kind"] == "Certificate" and d["spec"]["secretName"] == ca_secret
    ]
    assert len(ca_certificates) == 1
    assert ca_certificates[0]["spec"]["isCA"] is True
    root = find(docs, "Issuer", ca_certificates[0]["spec"]["issuerRef"]["name"])
    assert root["spec"] == {"selfSigned": {}}


# --- install.sh ---------------------------------------------------------------------------


def test_install_script_is_strict_bash() -> None:
    script = DEPLOY / "install.sh"
    assert os.access(script, os.X_OK), "deploy/install.sh must be executable (make deploy)"
    text = script.read_text(encoding="utf-8")
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    subprocess.run(["bash", "-n", str(script)], check=True)


InstallRender = Callable[..., tuple[list[Doc], Path]]


@pytest.fixture
def install_render(kubectl: str, tmp_path: Path) -> InstallRender:
    """Run ``deploy/install.sh --render`` with extra environment, in a copy of the
    environment whose TMPDIR is tmp_path; its objects and TMPDIR (empty afterwards)."""

    def run(**env: str) -> tuple[list[Doc], Path]:
        scratch = tmp_path / "tmp"
        scratch.mkdir(exist_ok=True)
        result = subprocess.run(
            [str(DEPLOY / "install.sh"), "--render"],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
            env={
                **os.environ,
                "KUBECTL": kubectl,
                "TMPDIR": str(scratch),
                "NAMESPACE": NAMESPACE,
                "IMAGE": "pod-replace-guard:dev",
                **env,
            },
        )
        assert result.returncode == 0, result.stderr
        return [doc for doc in yaml.safe_load_all(result.stdout) if doc], scratch

    return run


def test_install_render_sets_the_image_and_writes_nothing(
    install_render: InstallRender, docs: list[Doc]
) -> None:
    before = sorted(p.relative_to(REPO) for p in REPO.rglob("*") if ".git" not in p.parts)
    installed, scratch = install_render(IMAGE="registry.example:5000/team/prg:1.2.3")
    for each in all_containers(installed):
        assert each["image"] == "registry.example:5000/team/prg:1.2.3"
        each["image"] = container(docs)["image"]
    # Otherwise exactly what `kubectl apply -k deploy/` would install; no key material,
    # and nothing left behind, in the tree or in TMPDIR.
    assert installed == docs
    assert list(scratch.iterdir()) == []
    after = sorted(p.relative_to(REPO) for p in REPO.rglob("*") if ".git" not in p.parts)
    assert [p for p in after if p not in before and ".pytest" not in str(p)] == []


def test_install_render_moves_everything_to_another_namespace(
    install_render: InstallRender,
) -> None:
    installed, _ = install_render(NAMESPACE="guard", IMAGE="prg")
    namespace = find(installed, "Namespace", "guard")
    assert namespace["metadata"]["labels"]["kubernetes.io/metadata.name"] == "guard"
    for doc in installed:
        if doc["kind"] not in CLUSTER_SCOPED:
            assert doc["metadata"]["namespace"] == "guard", doc["kind"]
    settings = deployed_settings(installed)
    assert settings.namespace == "guard"
    hook = webhook(installed)
    assert hook["clientConfig"]["service"]["namespace"] == "guard"
    [expression] = hook["namespaceSelector"]["matchExpressions"]
    assert set(expression["values"]) == settings.judged_namespaces_excluded
    assert container(installed)["image"] == "prg:latest"


def test_install_rejects_a_bad_namespace(kubectl: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [str(DEPLOY / "install.sh"), "--render"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={
            **os.environ,
            "PYTHON": sys.executable,
            "KUBECTL": kubectl,
            "CERT_DIR": str(tmp_path),
            "NAMESPACE": "Not_A_Namespace",
        },
    )
    assert result.returncode != 0
    assert "NAMESPACE" in result.stderr


# --- the image ----------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (REPO / "Dockerfile").read_text(encoding="utf-8")
    joined = re.sub(r"\\\n", " ", text)
    instructions = []
    for line in joined.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def test_dockerfile_runs_as_non_root_with_runtime_dependencies_only() -> None:
    instructions = dockerfile_instructions()
    stages = [rest for keyword, rest in instructions if keyword == "FROM"]
    assert len(stages) == 2, "a build stage and a final stage"
    args = dict(
        ([*rest.split("=", 1), ""])[:2] for keyword, rest in instructions if keyword == "ARG"
    )
    assert args.get("PYTHON_IMAGE") == "python:3.11-slim"
    # Unset unless an offline build asks for it: then pip installs from wheelhouse/ only.
    assert args.get("PIP_NO_INDEX") == ""
    text = (REPO / "Dockerfile").read_text(encoding="utf-8")
    first = text.splitlines()[0]
    assert not first.startswith("# syntax="), "BuildKit would pull that frontend: not air-gapped"
    final = instructions[max(i for i, (k, _) in enumerate(instructions) if k == "FROM") :]
    users = [rest for keyword, rest in final if keyword == "USER"]
    assert users, "the final stage sets a USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit(), "numeric, so runAsNonRoot can check it"
    assert int(uid) != 0
    runs = " ".join(rest for keyword, rest in instructions if keyword == "RUN")
    # The live extra: the kubernetes client, for the controller container.
    assert 'pip install --no-cache-dir ".[live]"' in runs
    assert "[dev]" not in runs
    assert "[test]" not in runs
    assert not [rest for keyword, rest in final if keyword == "RUN"], "no shell in the final stage"
    assert ("COPY", "--from=build /opt/pod-replace-guard /opt/pod-replace-guard") in final
    assert ("EXPOSE", "8443") in final
    assert ("ENTRYPOINT", '["pod-replace-guard"]') in final
    assert ("CMD", '["serve"]') in final
    env = " ".join(rest for keyword, rest in final if keyword == "ENV")
    for setting in (
        "PRG_CERT_DIR=/etc/pod-replace-guard/tls",
        "PRG_BIND=0.0.0.0:8443",
        "PROMETHEUS_MULTIPROC_DIR=/tmp/metrics",
        "PYTHONUNBUFFERED=1",
    ):
        assert setting in env, setting


def test_dockerignore_admits_only_the_package() -> None:
    lines = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    assert {line[1:].rstrip("/") for line in lines if line.startswith("!")} == {
        "pyproject.toml",
        "README.md",
        "webhook",
        "wheelhouse",
    }


# --- the workflows ------------------------------------------------------------------------


def workflow(name: str) -> Doc:
    raw: dict[Any, Any] = yaml.safe_load(
        (REPO / ".github" / "workflows" / name).read_text(encoding="utf-8")
    )
    # YAML 1.1 reads the key `on` as True.
    raw["on"] = raw.pop(True, raw.get("on"))
    data: Doc = raw
    return data


def steps(data: Doc) -> list[Doc]:
    [job] = data["jobs"].values()
    job_steps: list[Doc] = job["steps"]
    return job_steps


def test_ci_workflow_runs_the_ci_script() -> None:
    data = workflow("ci.yml")
    assert {"push", "pull_request"} <= set(data["on"])
    [job] = data["jobs"].values()
    assert job["runs-on"] == "ubuntu-latest"
    assert str(job["env"]["CI"]) == "true"
    runs = [step.get("run", "") for step in steps(data)]
    assert any(run.strip().endswith("bash .ci/run") for run in runs)
    uses = " ".join(step.get("uses", "") for step in steps(data))
    assert "actions/setup-python" in uses
    assert "actions/setup-go" in uses
    cached = " ".join(str(step.get("with", {}).get("path", "")) for step in steps(data))
    assert "~/.cache/pod-replace-guard" in cached
    assert "~/go/pkg/mod" in cached


def test_kind_workflow_deploys_and_always_cleans_up() -> None:
    data = workflow("kind.yml")
    assert "push" in data["on"]
    runs = [step.get("run", "") for step in steps(data)]
    order = ["make kind-up", "make image", "make kind-load", "make deploy", "make e2e-kind"]
    positions = [next(i for i, run in enumerate(runs) if target in run) for target in order]
    assert positions == sorted(positions)
    down = [step for step in steps(data) if "make kind-down" in step.get("run", "")]
    assert down
    assert "always()" in down[0]["if"]
    failure = [step for step in steps(data) if "failure()" in str(step.get("if", ""))]
    assert any("hack/kind/diagnostics.sh" in step["run"] for step in failure)


def test_install_render_with_a_client_ca_requires_client_certificates(
    install_render: InstallRender, tmp_path: Path
) -> None:
    from webhook.certs import write_client_certificate

    ca_file = write_client_certificate(tmp_path / "client", "kube-apiserver")
    installed, _ = install_render(CLIENT_CA=str(ca_file))
    main = container(installed)
    env = {item["name"]: item.get("value") for item in main["env"]}
    mounts = {mount["name"]: mount for mount in main["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod_spec(installed)["volumes"]}
    assert env["PRG_CLIENT_CA"] == mounts["client-ca"]["mountPath"] + "/ca.crt"
    assert volumes["client-ca"]["configMap"]["name"] == "pod-replace-guard-client-ca"
    # The probes stay on the health port, which asks for no certificate.
    assert main["readinessProbe"]["httpGet"]["port"] == "health"


def test_install_refuses_a_missing_client_ca(install_render: InstallRender, tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="CLIENT_CA="):
        install_render(CLIENT_CA=str(tmp_path / "nowhere.crt"))


def test_install_render_with_network_policy_cidrs(install_render: InstallRender) -> None:
    installed, _ = install_render(NETWORK_POLICY_CIDRS="172.18.0.0/16,10.0.0.0/8")
    policy = find(installed, "NetworkPolicy", NAME)
    selected = policy["spec"]["podSelector"]["matchLabels"]
    pod_labels = find(installed, "Deployment", NAME)["spec"]["template"]["metadata"]["labels"]
    assert selected.items() <= pod_labels.items()
    admission, health, own = policy["spec"]["ingress"]
    # The controller's check that the Service answers, from the webhook's own pods.
    assert own["from"] == [{"podSelector": {"matchLabels": selected}}]
    assert own["ports"] == [{"port": "https", "protocol": "TCP"}]
    cidrs = {"10.0.0.0/8", "172.18.0.0/16"}
    assert {peer["ipBlock"]["cidr"] for peer in admission["from"]} == cidrs
    assert admission["ports"] == [{"port": "https", "protocol": "TCP"}]
    assert {p["ipBlock"]["cidr"] for p in health["from"] if "ipBlock" in p} == cidrs
    assert health["ports"] == [{"port": "health", "protocol": "TCP"}]
    assert "192.0.2.0/32" not in json.dumps(policy), "no placeholder left"


def test_install_refuses_a_malformed_cidr(install_render: InstallRender) -> None:
    with pytest.raises(AssertionError, match="NETWORK_POLICY_CIDRS"):
        install_render(NETWORK_POLICY_CIDRS="172.18.0.0/16,not-a-cidr")


def test_install_render_judging_subresources(install_render: InstallRender) -> None:
    installed, _ = install_render(JUDGE_SUBRESOURCES="1")
    entry = webhook(installed)
    assert entry["rules"][0]["resources"] == ["pods", "pods/ephemeralcontainers", "pods/resize"]
    settings = deployed_settings(installed)
    assert settings.judged_subresources == ("ephemeralcontainers", "resize")
    # The webhook still never judges status: the API server does not send it either.
    assert not any("status" in r for r in entry["rules"][0]["resources"])


def test_subresources_are_not_judged_by_default(docs: list[Doc]) -> None:
    assert webhook(docs)["rules"][0]["resources"] == ["pods"]
    assert deployed_settings(docs).judged_subresources == ()


def test_check_live_knows_the_webhooks_name(docs: list[Doc]) -> None:
    # check --live tells our denials from other webhooks' by this name.
    from webhook.live import WEBHOOK_NAME

    assert webhook(docs)["name"] == WEBHOOK_NAME
