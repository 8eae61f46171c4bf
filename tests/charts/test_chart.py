"""charts/pod-replace-guard: helm lint and helm template over a matrix of values, the
schema's refusals, and the defaults against `kubectl kustomize deploy/`.

The differences the comparison allows are the ones charts/pod-replace-guard/README.md
lists; anything else that differs fails it.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.charts.tools import (
    CHART,
    MONITORING,
    PUBLISHED_IMAGE,
    REPO,
    image_values,
    project_version,
    run,
)
from tests.deploy.test_manifests import find_kubectl, render
from webhook.settings import describe, load_settings

Doc = dict[str, Any]
RELEASE = "pod-replace-guard"
NAMESPACE = "pod-replace-guard"
# Labels Helm charts carry and deploy/ does not.
HELM_LABELS = {
    "app.kubernetes.io/instance",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/version",
    "helm.sh/chart",
}
# Settings the chart sets itself: the listeners and paths of its Deployment, and the
# release namespace.
CHART_OWNED_SETTINGS = {"namespace", "bind", "healthBind", "certDir", "clientCA"}
# `controller`'s settings: the chart's webhook.* and certificates.* values and its
# own object names stand for them.
CHART_OWNED_SETTINGS |= {
    "webhookConfiguration", "service", "webhookURL", "failurePolicy", "timeoutSeconds",
    "namespaceSelector", "certSecret", "caFile", "caLifetime", "certLifetime", "syncSeconds",
}  # fmt: skip
# A CA certificate (public, no key) for the existingSecret and clientAuth cases.
PEM_CA = (REPO / "tests" / "charts" / "testdata" / "ca.crt").read_text()


def template(helm: str, tmp_path: Path, values: Doc, *, namespace: str = NAMESPACE) -> list[Doc]:
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    result = run([helm, "template", RELEASE, str(CHART), "-n", namespace, "-f", str(values_file)])
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def by_kind(docs: list[Doc]) -> dict[tuple[str, str], Doc]:
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in docs}


def one(docs: list[Doc], kind: str) -> Doc:
    found = [doc for doc in docs if doc["kind"] == kind]
    assert len(found) == 1, [doc["metadata"]["name"] for doc in found]
    return found[0]


def kinds(docs: list[Doc]) -> set[str]:
    return {doc["kind"] for doc in docs}


def container(docs: list[Doc]) -> Doc:
    pod_spec: Doc = one(docs, "Deployment")["spec"]["template"]["spec"]
    webhook: Doc = pod_spec["containers"][0]
    return webhook


def settings_env(docs: list[Doc]) -> dict[str, str]:
    configmaps = [doc for doc in docs if doc["kind"] == "ConfigMap" and "PRG_MODE" in doc["data"]]
    assert len(configmaps) == 1
    data: dict[str, str] = configmaps[0]["data"]
    return data


def webhook_entry(docs: list[Doc]) -> Doc:
    entry: Doc = one(docs, "ValidatingWebhookConfiguration")["webhooks"][0]
    return entry


# --- the matrix -------------------------------------------------------------------------

ALL_SETTINGS: Doc = {
    "mode": "warn",
    "exemptUsers": ["system:serviceaccount:tools:operator"],
    "exemptGroups": ["platform-admins", "system:masters"],
    "exemptNamespaces": ["kube-system", "tools"],
    "logLevel": "DEBUG",
    "judgedSubresources": ["ephemeralcontainers", "resize"],
    "maxBodyBytes": 1048576,
    "tlsMinVersion": "1.3",
    "workers": 4,
    "threads": 16,
    "keepalive": 60,
    "gracefulTimeout": 15,
    "certReloadSeconds": 2.5,
    "handshakeTimeout": 3.0,
    "requestTimeout": 8.0,
    "maxConnections": 512,
    "inflightBytes": 16777216,
}


def check_defaults(docs: list[Doc]) -> None:
    assert kinds(docs) == {
        "ServiceAccount", "ConfigMap", "Service", "Deployment", "PodDisruptionBudget",
        "ValidatingWebhookConfiguration", "Secret",
    }  # fmt: skip
    assert container(docs)["image"] == f"{PUBLISHED_IMAGE}:{project_version()}"
    assert webhook_entry(docs)["failurePolicy"] == "Fail"


def check_all_settings(docs: list[Doc]) -> None:
    env = settings_env(docs)
    settings = load_settings(env)
    assert settings.mode == "warn"
    assert settings.exempt_groups == ("platform-admins", "system:masters")
    assert settings.exempt_namespaces == ("kube-system", "tools")
    assert settings.namespace == "guard"
    assert settings.judged_subresources == ("ephemeralcontainers", "resize")
    assert (settings.max_body_bytes, settings.tls_min_version) == (1048576, "1.3")
    assert (settings.workers, settings.threads, settings.keepalive) == (4, 16, 60)
    assert (settings.graceful_timeout, settings.cert_reload_seconds) == (15, 2.5)
    assert (settings.handshake_timeout, settings.request_timeout) == (3.0, 8.0)
    assert (settings.max_connections, settings.inflight_bytes) == (512, 16777216)
    entry = webhook_entry(docs)
    assert entry["rules"][0]["resources"] == ["pods", "pods/ephemeralcontainers", "pods/resize"]
    # The API server skips the same identities and namespaces as the webhook.
    conditions = {c["name"]: c["expression"] for c in entry["matchConditions"]}
    assert "'system:serviceaccount:tools:operator'" in conditions["not-exempt-user"]
    assert "'platform-admins',\n  'system:masters'" in conditions["not-exempt-group"]
    assert entry["namespaceSelector"]["matchExpressions"][0]["values"] == [
        "kube-system", "tools", "guard",
    ]  # fmt: skip
    assert entry["clientConfig"]["service"]["namespace"] == "guard"


def check_cert_manager(docs: list[Doc]) -> None:
    assert "Secret" not in kinds(docs)
    certificates = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Certificate"}
    assert set(certificates) == {"pod-replace-guard-ca", "pod-replace-guard-serving"}
    serving = certificates["pod-replace-guard-serving"]["spec"]
    assert serving["secretName"] == "pod-replace-guard-tls"
    assert "pod-replace-guard.pod-replace-guard.svc" in serving["dnsNames"]
    vwc = one(docs, "ValidatingWebhookConfiguration")
    assert vwc["metadata"]["annotations"] == {
        "cert-manager.io/inject-ca-from": "pod-replace-guard/pod-replace-guard-serving"
    }
    assert "caBundle" not in vwc["webhooks"][0]["clientConfig"]


def check_cert_manager_issuer(docs: list[Doc]) -> None:
    assert "Issuer" not in kinds(docs)
    certificate = one(docs, "Certificate")["spec"]
    assert certificate["issuerRef"] == {
        "group": "cert-manager.io",
        "kind": "ClusterIssuer",
        "name": "corp",
    }
    assert (certificate["duration"], certificate["renewBefore"]) == ("720h", "240h")


def check_existing_secret(docs: list[Doc]) -> None:
    assert "Secret" not in kinds(docs)
    volumes = one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert volumes[0]["secret"]["secretName"] == "my-tls"
    ca_bundle = webhook_entry(docs)["clientConfig"]["caBundle"]
    assert base64.b64decode(ca_bundle).decode() == PEM_CA


def check_client_auth_network_policy(docs: list[Doc]) -> None:
    env = {e["name"]: e["value"] for e in container(docs)["env"]}
    assert env["PRG_CLIENT_CA"] == "/etc/pod-replace-guard/client-ca/ca.crt"
    client_ca = [d for d in docs if d["metadata"]["name"] == "pod-replace-guard-client-ca"]
    assert client_ca[0]["data"]["ca.crt"] == PEM_CA
    policy = one(docs, "NetworkPolicy")["spec"]
    assert policy["ingress"][0]["from"] == [{"ipBlock": {"cidr": "172.18.0.0/16"}}]
    assert policy["ingress"][1]["from"][-1] == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "prometheus"}}
    }


def check_monitoring(docs: list[Doc]) -> None:
    monitor = one(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    rule = one(docs, "PrometheusRule")
    assert rule["spec"] == yaml.safe_load((MONITORING / "prometheus-rules.yaml").read_text())
    dashboards = [d for d in docs if d["metadata"]["name"] == "pod-replace-guard-dashboard"]
    assert dashboards[0]["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads(dashboards[0]["data"]["pod-replace-guard.json"])
    assert shipped == json.loads((MONITORING / "grafana-dashboard.json").read_text())


def check_scheduling(docs: list[Doc]) -> None:
    deployment = one(docs, "Deployment")
    assert deployment["metadata"]["name"] == "guard"
    assert deployment["spec"]["replicas"] == 3
    pod = deployment["spec"]["template"]["spec"]
    assert "priorityClassName" not in pod
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["tolerations"] == [
        {"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert pod["affinity"] == {"nodeAffinity": {"zone": "a"}}
    # Merged with the defaults: the memory limit stays.
    assert pod["containers"][0]["resources"] == {
        "requests": {"cpu": "250m", "memory": "256Mi"},
        "limits": {"memory": "512Mi"},
    }
    assert pod["containers"][0]["image"] == "registry.example/prg@sha256:" + "a" * 64
    assert "PodDisruptionBudget" not in kinds(docs)
    entry = webhook_entry(docs)
    assert (entry["failurePolicy"], entry["timeoutSeconds"]) == ("Ignore", 10)
    selector = entry["namespaceSelector"]
    assert selector["matchLabels"] == {"team": "apps"}
    assert selector["matchExpressions"][1] == {"key": "tier", "operator": "Exists"}
    assert entry["clientConfig"]["service"]["name"] == "guard"


def check_security_env_service_account(docs: list[Doc]) -> None:
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    # Merged into the defaults: added keys and changed ids; runAsUser removed with null.
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsGroup": 65532,
        "fsGroup": 1000,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert container(docs)["securityContext"] == {
        "privileged": False,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seLinuxOptions": {"level": "s0:c123,c456"},
    }
    env = container(docs)["env"]
    names = [e["name"] for e in env]
    assert names[:3] == ["PRG_BIND", "PRG_CERT_DIR", "PROMETHEUS_MULTIPROC_DIR"]
    assert env[3:] == [
        {"name": "HTTPS_PROXY", "value": "http://proxy.internal:3128"},
        {"name": "PYTHONHASHSEED", "value": "0"},
        {"name": "BIG", "value": "1048576"},
        {"name": "DEBUG_TRACE", "value": "true"},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "proxy", "key": "token"}}},
    ]
    account = one(docs, "ServiceAccount")
    assert account["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/none",
        "example.com/owner": "platform",
    }
    assert account["automountServiceAccountToken"] is False


MATRIX: dict[str, tuple[Doc, Callable[[list[Doc]], None]]] = {
    "defaults": ({}, check_defaults),
    "all-settings": ({"settings": ALL_SETTINGS}, check_all_settings),
    "cert-manager": ({"certificates": {"source": "certManager"}}, check_cert_manager),
    "cert-manager-issuer": (
        {
            "certificates": {
                "source": "certManager",
                "certManager": {
                    "issuerRef": {
                        "group": "cert-manager.io",
                        "kind": "ClusterIssuer",
                        "name": "corp",
                    },
                    "duration": "720h",
                    "renewBefore": "240h",
                },
            }
        },
        check_cert_manager_issuer,
    ),
    "existing-secret": (
        {
            "certificates": {
                "source": "existingSecret",
                "existingSecret": {"name": "my-tls", "caCertificate": PEM_CA},
            }
        },
        check_existing_secret,
    ),
    "client-auth-network-policy": (
        {
            "clientAuth": {"enabled": True, "caCertificate": PEM_CA},
            "networkPolicy": {
                "enabled": True,
                "cidrs": ["172.18.0.0/16"],
                "monitoringNamespace": "prometheus",
            },
        },
        check_client_auth_network_policy,
    ),
    "monitoring": (
        {
            "monitoring": {
                "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus"}},
                "prometheusRule": {"enabled": True},
                "dashboard": {"enabled": True},
            }
        },
        check_monitoring,
    ),
    "security-env-service-account": (
        {
            "podSecurityContext": {
                "runAsUser": None,
                "fsGroup": 1000,
                "fsGroupChangePolicy": "OnRootMismatch",
            },
            "securityContext": {"seLinuxOptions": {"level": "s0:c123,c456"}},
            "extraEnv": [
                {"name": "HTTPS_PROXY", "value": "http://proxy.internal:3128"},
                {"name": "PYTHONHASHSEED", "value": 0},
                {"name": "BIG", "value": 1048576},
                {"name": "DEBUG_TRACE", "value": True},
                {
                    "name": "TOKEN",
                    "valueFrom": {"secretKeyRef": {"name": "proxy", "key": "token"}},
                },
            ],
            "serviceAccount": {
                "annotations": {
                    "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/none",
                    "example.com/owner": "platform",
                }
            },
        },
        check_security_env_service_account,
    ),
    "scheduling": (
        {
            "fullnameOverride": "guard",
            "replicas": 3,
            "priorityClassName": "",
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
            "affinity": {"nodeAffinity": {"zone": "a"}},
            "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}},
            "image": {"repository": "registry.example/prg", "digest": "sha256:" + "a" * 64},
            "podDisruptionBudget": {"enabled": False},
            "webhook": {
                "failurePolicy": "Ignore",
                "timeoutSeconds": 10,
                "namespaceSelector": {
                    "matchLabels": {"team": "apps"},
                    "matchExpressions": [{"key": "tier", "operator": "Exists"}],
                },
            },
        },
        check_scheduling,
    ),
}


@pytest.mark.parametrize("case", MATRIX)
def test_lint_and_template(helm: str, tmp_path: Path, case: str) -> None:
    values, check = MATRIX[case]
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    namespace = "guard" if case == "all-settings" else NAMESPACE
    lint = run([helm, "lint", "--strict", str(CHART), "-n", namespace, "-f", str(values_file)])
    assert lint.returncode == 0, lint.stdout + lint.stderr
    docs = template(helm, tmp_path, values, namespace=namespace)
    for doc in docs:
        if doc["kind"] not in {"ValidatingWebhookConfiguration"}:
            assert doc["metadata"]["namespace"] == namespace, doc["metadata"]
        assert doc["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    check(docs)


def test_every_webhook_setting_has_a_value() -> None:
    """values.yaml's settings: every key of webhook/settings.py but those the chart sets."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    yaml_keys = {row[1] for row in describe()}
    assert set(values["settings"]) == yaml_keys - CHART_OWNED_SETTINGS
    assert set(ALL_SETTINGS) == set(values["settings"])


# --- the schema ---------------------------------------------------------------------------

BAD_VALUES: dict[str, tuple[Doc, str]] = {
    "unknown mode": ({"settings": {"mode": "block"}}, "/settings/mode"),
    "TLS 1.1": ({"settings": {"tlsMinVersion": "1.1"}}, "/settings/tlsMinVersion"),
    "tlsMinVersion 1.1 as a number": (
        {"settings": {"tlsMinVersion": 1.1}},
        "/settings/tlsMinVersion",
    ),
    "tlsMinVersion 1.30 as a string": (
        {"settings": {"tlsMinVersion": "1.30"}},
        "/settings/tlsMinVersion",
    ),
    "too many workers": ({"settings": {"workers": 65}}, "/settings/workers"),
    "tiny body limit": ({"settings": {"maxBodyBytes": 10}}, "/settings/maxBodyBytes"),
    "log level": ({"settings": {"logLevel": "TRACE"}}, "/settings/logLevel"),
    "bad namespace": (
        {"settings": {"exemptNamespaces": ["Kube_System"]}},
        "/settings/exemptNamespaces/0",
    ),
    "users not a list": ({"settings": {"exemptUsers": "alice"}}, "/settings/exemptUsers"),
    "unknown setting": ({"settings": {"bind": "0.0.0.0:1"}}, "'bind' not allowed"),
    "unknown top-level key": ({"replica": 3}, "'replica' not allowed"),
    "no replicas": ({"replicas": 0}, "/replicas"),
    "failure policy": ({"webhook": {"failurePolicy": "Never"}}, "/webhook/failurePolicy"),
    "timeout above 30 s": ({"webhook": {"timeoutSeconds": 31}}, "/webhook/timeoutSeconds"),
    "certificate source": ({"certificates": {"source": "vault"}}, "/certificates/source"),
    "existing secret without a name": (
        {"certificates": {"source": "existingSecret", "existingSecret": {"caCertificate": PEM_CA}}},
        "/certificates/existingSecret/name",
    ),
    "existing secret without its CA": (
        {"certificates": {"source": "existingSecret", "existingSecret": {"name": "tls"}}},
        "/certificates/existingSecret/caCertificate",
    ),
    "client auth without a CA": ({"clientAuth": {"enabled": True}}, "/clientAuth/caCertificate"),
    "network policy without CIDRs": ({"networkPolicy": {"enabled": True}}, "/networkPolicy/cidrs"),
    "unknown subresource": (
        {"settings": {"judgedSubresources": ["status"]}},
        "/settings/judgedSubresources/0",
    ),
    "pull policy": ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    "digest": ({"image": {"digest": "latest"}}, "/image/digest"),
    # certManager durations: Go durations only (cert-manager would refuse these later,
    # in the cluster, with the install already half done).
    **{
        f"certManager {key} {value!r}": (
            {"certificates": {"source": "certManager", "certManager": {key: value}}},
            f"/certificates/certManager/{key}",
        )
        for key in ("duration", "renewBefore")
        for value in ("90d", "2160", "", "h", "2160h ", "1 h", "P90D", 2160)
    },
    # The keys that keep the pod Pod Security "restricted" cannot be changed ...
    "root allowed": ({"podSecurityContext": {"runAsNonRoot": False}}, "/podSecurityContext"),
    "user 0": ({"podSecurityContext": {"runAsUser": 0}}, "/podSecurityContext/runAsUser"),
    "no seccomp": (
        {"podSecurityContext": {"seccompProfile": {"type": "Unconfined"}}},
        "/podSecurityContext/seccompProfile/type",
    ),
    "writable root": (
        {"securityContext": {"readOnlyRootFilesystem": False}},
        "/securityContext/readOnlyRootFilesystem",
    ),
    "privilege escalation": (
        {"securityContext": {"allowPrivilegeEscalation": True}},
        "/securityContext/allowPrivilegeEscalation",
    ),
    "privileged": ({"securityContext": {"privileged": True}}, "/securityContext/privileged"),
    "container as root": (
        {"securityContext": {"runAsNonRoot": False}},
        "/securityContext/runAsNonRoot",
    ),
    "capabilities not all dropped": (
        {"securityContext": {"capabilities": {"drop": ["NET_RAW"]}}},
        "/securityContext/capabilities/drop",
    ),
    "capability added": (
        {"securityContext": {"capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN"]}}},
        "/securityContext/capabilities/add",
    ),
    # Pod Security baseline's other keys.
    "procMount unmasked": (
        {"securityContext": {"procMount": "Unmasked"}},
        "/securityContext/procMount",
    ),
    **{
        f"{section} AppArmor unconfined": (
            {section: {"appArmorProfile": {"type": "Unconfined"}}},
            f"/{section}/appArmorProfile/type",
        )
        for section in ("securityContext", "podSecurityContext")
    },
    **{
        f"{section} SELinux spc_t": (
            {section: {"seLinuxOptions": {"type": "spc_t"}}},
            f"/{section}/seLinuxOptions/type",
        )
        for section in ("securityContext", "podSecurityContext")
    },
    "windows host process": (
        {"securityContext": {"windowsOptions": {"hostProcess": True}}},
        "/securityContext/windowsOptions/hostProcess",
    ),
    "sysctls": (
        {"podSecurityContext": {"sysctls": [{"name": "kernel.shm_rmid_forced", "value": "1"}]}},
        "/podSecurityContext/sysctls",
    ),
    # ... nor removed with null (Helm deletes the default's key).
    **{
        f"{section}.{key} removed": ({section: {key: None}}, f"missing property '{key}'")
        for section, key in (
            ("podSecurityContext", "runAsNonRoot"),
            ("podSecurityContext", "seccompProfile"),
            ("securityContext", "readOnlyRootFilesystem"),
            ("securityContext", "allowPrivilegeEscalation"),
            ("securityContext", "runAsNonRoot"),
            ("securityContext", "privileged"),
            ("securityContext", "capabilities"),
        )
    },
    "extraEnv without a name": ({"extraEnv": [{"value": "x"}]}, "/extraEnv/0"),
    "extraEnv value and valueFrom": (
        {"extraEnv": [{"name": "A", "value": "x", "valueFrom": {"fieldRef": {}}}]},
        "/extraEnv/0",
    ),
    "extraEnv value a map": ({"extraEnv": [{"name": "A", "value": {"a": 1}}]}, "/extraEnv/0/value"),
    "extraEnv as a map": ({"extraEnv": {"A": "x"}}, "/extraEnv"),
    "service account annotation not a string": (
        {"serviceAccount": {"annotations": {"a": 1}}},
        "/serviceAccount/annotations/a",
    ),
    "service account name": ({"serviceAccount": {"name": "x"}}, "'name' not allowed"),
}


@pytest.mark.parametrize("case", BAD_VALUES)
def test_schema_rejects(helm: str, tmp_path: Path, case: str) -> None:
    values, where = BAD_VALUES[case]
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    result = run([helm, "template", RELEASE, str(CHART), "-f", str(values_file)])
    assert result.returncode != 0, f"{case}: accepted"
    assert "values don't meet the specifications of the schema" in result.stderr, result.stderr
    assert where in result.stderr, result.stderr


def helm_template_args(helm: str, *args: str) -> list[Doc]:
    result = run([helm, "template", RELEASE, str(CHART), "-n", NAMESPACE, *args])
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


# How tlsMinVersion reaches the chart: --set gives a string, --set-json and an unquoted
# 1.3 in a values file a number. Each renders the string the webhook reads.
TLS_MIN_VERSION_FORMS = {
    "--set 1.3": ["--set", "settings.tlsMinVersion=1.3"],
    "--set-string 1.3": ["--set-string", "settings.tlsMinVersion=1.3"],
    "--set-json 1.3": ["--set-json", "settings.tlsMinVersion=1.3"],
    "--set-json '1.2'": ["--set-json", 'settings.tlsMinVersion="1.2"'],
    "--set 1.2": ["--set", "settings.tlsMinVersion=1.2"],
}


@pytest.mark.parametrize("form", TLS_MIN_VERSION_FORMS)
def test_tls_min_version_forms(helm: str, form: str) -> None:
    args = TLS_MIN_VERSION_FORMS[form]
    version = args[1][-4:-1] if args[1].endswith('"') else args[1][-3:]
    env = settings_env(helm_template_args(helm, *args))
    assert env["PRG_TLS_MIN_VERSION"] == version
    assert load_settings(env).tls_min_version == version


def test_tls_min_version_number_in_values_file(helm: str, tmp_path: Path) -> None:
    values_file = tmp_path / "values.yaml"
    values_file.write_text("settings:\n  tlsMinVersion: 1.3\n")  # a YAML float
    env = settings_env(helm_template_args(helm, "-f", str(values_file)))
    assert env["PRG_TLS_MIN_VERSION"] == "1.3"


@pytest.mark.parametrize(
    ("image", "rendered"),
    [
        ("pod-replace-guard:dev", "pod-replace-guard:dev"),
        ("localhost:5000/team/prg:1.2", "localhost:5000/team/prg:1.2"),
        ("localhost:5000/prg", "localhost:5000/prg:latest"),
        ("registry.example/prg@sha256:" + "b" * 64, "registry.example/prg@sha256:" + "b" * 64),
    ],
)
def test_kind_flow_installs_the_image_it_built(helm: str, image: str, rendered: str) -> None:
    """make helm-kind's --set flags (image_values) run exactly $(IMAGE), not the default
    (published) repository: the offline kind cluster has only the image it loaded."""
    assert container(helm_template_args(helm, *image_values(image)))["image"] == rendered


@pytest.mark.parametrize("duration", ["2160h0m0s", "2160h", "1h30m", "1.5h", "90m"])
def test_cert_manager_go_durations(helm: str, duration: str) -> None:
    """As cert-manager prints them (2160h0m0s) or as people write them; quoted strings."""
    docs = helm_template_args(
        helm,
        "--set", "certificates.source=certManager",
        "--set", f"certificates.certManager.duration={duration}",
        "--set", "certificates.certManager.renewBefore=720h0m0s",
    )  # fmt: skip
    serving = next(d for d in docs if d["metadata"]["name"].endswith("-serving"))["spec"]
    assert (serving["duration"], serving["renewBefore"]) == (duration, "720h0m0s")


# The same pinned keys when the schema is skipped (--skip-schema-validation), and the
# extraEnv names the template refuses (env would win over the settings' envFrom).
TEMPLATE_REFUSES: dict[str, tuple[list[str], str]] = {
    "writable root without the schema": (
        ["--skip-schema-validation", "--set", "securityContext.readOnlyRootFilesystem=false"],
        "securityContext.readOnlyRootFilesystem must be true",
    ),
    "escalation without the schema": (
        ["--skip-schema-validation", "--set", "securityContext.allowPrivilegeEscalation=null"],
        "securityContext.allowPrivilegeEscalation must be false",
    ),
    "root without the schema": (
        ["--skip-schema-validation", "--set", "podSecurityContext.runAsNonRoot=false"],
        "podSecurityContext.runAsNonRoot must be true",
    ),
    "capabilities without the schema": (
        ["--skip-schema-validation", "--set", "securityContext.capabilities.drop={NET_RAW}"],
        "securityContext.capabilities.drop must include ALL",
    ),
    "capability added without the schema": (
        ["--skip-schema-validation", "--set", "securityContext.capabilities.add={NET_ADMIN}"],
        "securityContext.capabilities.add must be empty",
    ),
    "extraEnv PRG_MODE": (
        ["--set", "extraEnv[0].name=PRG_MODE", "--set", "extraEnv[0].value=audit"],
        "extraEnv[0] PRG_MODE: PRG_* variables are set through settings.*",
    ),
    "extraEnv PROMETHEUS_MULTIPROC_DIR": (
        [
            "--set",
            "extraEnv[0].name=A",
            "--set",
            "extraEnv[0].value=a",
            "--set",
            "extraEnv[1].name=PROMETHEUS_MULTIPROC_DIR",
            "--set",
            "extraEnv[1].value=/x",
        ],
        "extraEnv[1] PROMETHEUS_MULTIPROC_DIR",
    ),
}


@pytest.mark.parametrize("case", TEMPLATE_REFUSES)
def test_template_refuses(helm: str, case: str) -> None:
    args, message = TEMPLATE_REFUSES[case]
    result = run([helm, "template", RELEASE, str(CHART), *args])
    assert result.returncode != 0, f"{case}: accepted"
    assert message in result.stderr, result.stderr


# --- generated certificates -------------------------------------------------------------


def test_generated_certificates(helm: str, tmp_path: Path) -> None:
    """A CA, and a serving certificate it signed for the Service's names; the caBundle is the CA."""
    docs = by_kind(template(helm, tmp_path, {}))
    ca_secret = docs[("Secret", "pod-replace-guard-ca")]["data"]
    tls = docs[("Secret", "pod-replace-guard-tls")]
    assert tls["type"] == "kubernetes.io/tls"
    ca_pem = base64.b64decode(tls["data"]["ca.crt"])
    assert ca_pem == base64.b64decode(ca_secret["tls.crt"])
    vwc = docs[("ValidatingWebhookConfiguration", "pod-replace-guard")]
    assert base64.b64decode(vwc["webhooks"][0]["clientConfig"]["caBundle"]) == ca_pem
    ca = x509.load_pem_x509_certificate(ca_pem)
    serving = x509.load_pem_x509_certificate(base64.b64decode(tls["data"]["tls.crt"]))
    serving.verify_directly_issued_by(ca)
    names = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {
        "pod-replace-guard.pod-replace-guard.svc",
        "pod-replace-guard.pod-replace-guard.svc.cluster.local",
        "pod-replace-guard.pod-replace-guard",
        "pod-replace-guard",
    }
    usages = serving.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in usages
    lifetime = serving.not_valid_after_utc - serving.not_valid_before_utc
    assert 364 <= lifetime.days <= 366
    assert b"PRIVATE KEY" in base64.b64decode(tls["data"]["tls.key"])


def test_rules_and_dashboard_copies_are_identical() -> None:
    """Helm reads only inside the chart: files/ holds copies of deploy/monitoring/."""
    for name in ("prometheus-rules.yaml", "grafana-dashboard.json"):
        assert (CHART / "files" / name).read_bytes() == (MONITORING / name).read_bytes(), name


# --- the defaults against deploy/ -------------------------------------------------------

# Objects only one side has: the chart does not own the release namespace (Helm
# creates it with --create-namespace), and it generates the TLS Secrets that
# deploy/install.sh creates outside kustomize.
ONLY_KUSTOMIZE = {("Namespace", "pod-replace-guard")}
ONLY_CHART = {("Secret", "pod-replace-guard-ca"), ("Secret", "pod-replace-guard-tls")}
HASHED_CONFIGMAP = re.compile(r"^pod-replace-guard-[a-z0-9]{10}$")


def collapse_cel_whitespace(doc: Doc) -> None:
    """kustomize re-folds the matchConditions' YAML strings: CEL ignores the difference."""
    for condition in doc["webhooks"][0].get("matchConditions", []):
        condition["expression"] = " ".join(condition["expression"].split())


def normalise_kustomize(doc: Doc) -> Doc:
    doc = copy.deepcopy(doc)
    if doc["kind"] == "ValidatingWebhookConfiguration":
        collapse_cel_whitespace(doc)
    if doc["kind"] == "ConfigMap":
        # kustomize's configMapGenerator appends a hash of the contents to the name.
        assert HASHED_CONFIGMAP.match(doc["metadata"]["name"]), doc["metadata"]["name"]
        doc["metadata"]["name"] = "pod-replace-guard"
    if doc["kind"] == "Deployment":
        pod = doc["spec"]["template"]["spec"]
        ref = pod["containers"][0]["envFrom"][0]["configMapRef"]
        assert HASHED_CONFIGMAP.match(ref["name"])
        ref["name"] = "pod-replace-guard"
        # The image: deploy/ says pod-replace-guard:dev, the chart the published image at
        # its appVersion.
        assert pod["containers"][0]["image"] == "pod-replace-guard:dev"
        pod["containers"][0]["image"] = f"{PUBLISHED_IMAGE}:{project_version()}"
    return doc


def normalise_chart(doc: Doc) -> Doc:
    doc = copy.deepcopy(doc)
    labels = doc["metadata"]["labels"]
    assert set(labels) >= HELM_LABELS, labels
    for key in HELM_LABELS:
        del labels[key]
    if doc["kind"] == "Deployment":
        annotations = doc["spec"]["template"]["metadata"]["annotations"]
        assert re.fullmatch(r"[0-9a-f]{64}", annotations.pop("checksum/settings"))
    if doc["kind"] == "ValidatingWebhookConfiguration":
        collapse_cel_whitespace(doc)
        client = doc["webhooks"][0]["clientConfig"]
        assert base64.b64decode(client.pop("caBundle")).startswith(b"-----BEGIN CERTIFICATE")
    return doc


@pytest.fixture(scope="module")
def kustomize_docs() -> list[Doc]:
    kubectl = find_kubectl()
    if kubectl is None:
        reason = "kubectl not found (not on PATH, no $KUBECTL): cannot render deploy/"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        print(f"\nSKIPPING: {reason}")
        pytest.skip(reason)
    return render(kubectl, "deploy")


def test_defaults_render_deploy(helm: str, tmp_path: Path, kustomize_docs: list[Doc]) -> None:
    chart = by_kind(template(helm, tmp_path, {}))
    kustomize = by_kind([normalise_kustomize(doc) for doc in kustomize_docs])
    assert set(kustomize) - set(chart) == ONLY_KUSTOMIZE
    assert set(chart) - set(kustomize) == ONLY_CHART
    for key in sorted(set(chart) & set(kustomize)):
        ours, theirs = normalise_chart(chart[key]), kustomize[key]
        assert ours == theirs, (
            f"{key}: chart\n{yaml.safe_dump(ours)}\nkustomize\n{yaml.safe_dump(theirs)}"
        )
