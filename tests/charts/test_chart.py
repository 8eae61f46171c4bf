"""charts/pod-replace-guard: helm lint and helm template over a matrix of values, the
schema's refusals, and the defaults against `kubectl kustomize deploy/`.

The differences the comparison allows are the ones charts/pod-replace-guard/README.md
lists; anything else that differs fails it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.charts.tools import (
    CHART,
    MONITORING,
    PUBLISHED_IMAGE,
    REPO,
    image_values,
    project_version,
    run,
)
from tests.deploy.test_manifests import cel_strings, find_kubectl, render
from webhook.registration import CANARY_LABEL, WEBHOOK_NAME, webhook_entry
from webhook.settings import Settings, describe, load_settings

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
    "canaryConfigMap",
}  # fmt: skip
# A CA certificate (public, no key) for the existingSecret and clientAuth cases.
PEM_CA = (REPO / "tests" / "charts" / "testdata" / "ca.crt").read_text()
SOURCES = ("controller", "certManager", "existingSecret")
TLS_DIR = "/etc/pod-replace-guard/tls"
TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
CONTROLLER_RESOURCES = {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "192Mi"}}


def source_values(source: str) -> Doc:
    """The least values that select a certificate source."""
    certificates: Doc = {"source": source}
    if source == "existingSecret":
        certificates["existingSecret"] = {"name": "my-tls", "caCertificate": PEM_CA}
    return {"certificates": certificates}


def template_text(helm: str, tmp_path: Path, values: Doc, *, namespace: str = NAMESPACE) -> str:
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    result = run([helm, "template", RELEASE, str(CHART), "-n", namespace, "-f", str(values_file)])
    assert result.returncode == 0, result.stderr
    return result.stdout


def template(helm: str, tmp_path: Path, values: Doc, *, namespace: str = NAMESPACE) -> list[Doc]:
    text = template_text(helm, tmp_path, values, namespace=namespace)
    return [doc for doc in yaml.safe_load_all(text) if doc]


def by_kind(docs: list[Doc]) -> dict[tuple[str, str], Doc]:
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in docs}


def one(docs: list[Doc], kind: str) -> Doc:
    found = [doc for doc in docs if doc["kind"] == kind]
    assert len(found) == 1, [doc["metadata"]["name"] for doc in found]
    return found[0]


def kinds(docs: list[Doc]) -> set[str]:
    return {doc["kind"] for doc in docs}


def pod_spec(docs: list[Doc]) -> Doc:
    spec: Doc = one(docs, "Deployment")["spec"]["template"]["spec"]
    return spec


def containers(docs: list[Doc]) -> dict[str, Doc]:
    """Every container of the pod, init containers included, by name."""
    pod = pod_spec(docs)
    return {c["name"]: c for c in [*pod.get("initContainers", []), *pod["containers"]]}


def container(docs: list[Doc]) -> Doc:
    webhook: Doc = pod_spec(docs)["containers"][0]
    assert webhook["name"] == "webhook"
    return webhook


def volumes(docs: list[Doc]) -> dict[str, Doc]:
    return {volume["name"]: volume for volume in pod_spec(docs)["volumes"]}


def mounts(item: Doc) -> dict[str, Doc]:
    return {mount["name"]: mount for mount in item["volumeMounts"]}


def settings_env(docs: list[Doc]) -> dict[str, str]:
    configmaps = [
        doc for doc in docs if doc["kind"] == "ConfigMap" and "PRG_MODE" in doc.get("data", {})
    ]
    assert len(configmaps) == 1
    data: dict[str, str] = configmaps[0]["data"]
    return data


def container_environ(docs: list[Doc], name: str) -> dict[str, str]:
    """What the container's process sees: its envFrom ConfigMap, then its env values."""
    item = containers(docs)[name]
    configmaps = by_kind(docs)
    environ: dict[str, str] = {}
    for source in item.get("envFrom", []):
        environ.update(configmaps[("ConfigMap", source["configMapRef"]["name"])]["data"])
    environ.update({e["name"]: e["value"] for e in item.get("env", []) if "value" in e})
    return environ


def controller_settings(docs: list[Doc]) -> Settings:
    """The settings the controller container starts with (it checks them as it does)."""
    return load_settings(container_environ(docs, "controller"))


def registered_entry(docs: list[Doc]) -> Doc:
    """The webhook entry the controller registers, built from the chart's settings."""
    return webhook_entry(controller_settings(docs), "Q0E=")


def check_no_entry(docs: list[Doc]) -> None:
    """The configuration as installed: labels only, no webhooks, refuses nothing."""
    vwc = one(docs, "ValidatingWebhookConfiguration")
    assert set(vwc) == {"apiVersion", "kind", "metadata"}
    assert set(vwc["metadata"]) == {"name", "labels"}
    assert vwc["metadata"]["labels"]["app.kubernetes.io/component"] == "webhook-configuration"


def check_controller_wiring(docs: list[Doc], source: str, fullname: str = RELEASE) -> None:
    """What every source shares, and what only the controller source has."""
    check_no_entry(docs)
    pod = pod_spec(docs)
    every = containers(docs)
    names = [c["name"] for c in pod["containers"]]
    assert names == ["webhook", "controller"]
    init = [c["name"] for c in pod.get("initContainers", [])]
    assert init == (["certificates"] if source == "controller" else [])
    webhook = every["webhook"]
    for name in ("controller", *init):
        item = every[name]
        assert item["args"] == (
            ["controller", "--once"] if name == "certificates" else ["controller"]
        )
        # One image, one securityContext for all.
        assert item["image"] == webhook["image"]
        assert item["imagePullPolicy"] == webhook["imagePullPolicy"]
        assert item["securityContext"] == webhook["securityContext"]
        assert item["envFrom"] == webhook["envFrom"]
        assert "ports" not in item
        assert mounts(item)["tls"] == {
            "name": "tls",
            "mountPath": TLS_DIR,
            **({} if source == "controller" else {"readOnly": True}),
        }
        assert mounts(item)["kube-api-access"] == {
            "name": "kube-api-access", "mountPath": TOKEN_DIR, "readOnly": True,
        }  # fmt: skip
    # The webhook container reads the network and holds no credentials.
    assert "kube-api-access" not in mounts(webhook)
    assert mounts(webhook)["tls"] == {"name": "tls", "mountPath": TLS_DIR, "readOnly": True}
    assert pod["automountServiceAccountToken"] is False
    assert one(docs, "ServiceAccount")["automountServiceAccountToken"] is False
    projected = volumes(docs)["kube-api-access"]["projected"]["sources"]
    assert projected[0] == {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}}
    tls = volumes(docs)["tls"]
    if source == "controller":
        assert tls == {"name": "tls", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}
    else:
        assert set(tls) == {"name", "secret"}
        assert tls["secret"]["defaultMode"] == 0o440
    settings = controller_settings(docs)
    assert settings.cert_dir == TLS_DIR
    assert settings.webhook_configuration == fullname
    assert settings.service == fullname
    assert settings.cert_secret == (f"{fullname}-certificates" if source == "controller" else "")
    check_rbac(docs, source, fullname)


def check_rbac(docs: list[Doc], source: str, fullname: str = RELEASE) -> None:
    """Exactly: get and update of the one Secret (controller source) and the one
    configuration, patch of the canary ConfigMap, by name, bound to the webhook's
    service account."""
    rbac = {key: doc for key, doc in by_kind(docs).items() if doc["apiVersion"].startswith("rbac.")}
    role_name, cluster_role_name = f"{fullname}-certificates", f"{fullname}-webhook-configuration"
    canary = f"{fullname}-canary"
    expected = {
        ("ClusterRole", cluster_role_name),
        ("ClusterRoleBinding", cluster_role_name),
        ("Role", canary),
        ("RoleBinding", canary),
    }
    if source == "controller":
        expected |= {("Role", role_name), ("RoleBinding", role_name)}
    assert set(rbac) == expected
    subjects = [{"kind": "ServiceAccount", "name": fullname, "namespace": NAMESPACE}]
    cluster_role = rbac[("ClusterRole", cluster_role_name)]
    assert cluster_role["rules"] == [
        {
            "apiGroups": ["admissionregistration.k8s.io"],
            "resources": ["validatingwebhookconfigurations"],
            "resourceNames": [one(docs, "ValidatingWebhookConfiguration")["metadata"]["name"]],
            "verbs": ["get", "update"],
        }
    ]
    assert cluster_role["rules"][0]["resourceNames"] == [fullname]
    binding = rbac[("ClusterRoleBinding", cluster_role_name)]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role_name,
    }  # fmt: skip
    assert binding["subjects"] == subjects
    assert rbac[("Role", canary)]["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": [canary],
            "verbs": ["patch"],
        }
    ]
    assert rbac[("RoleBinding", canary)]["subjects"] == subjects
    assert controller_settings(docs).canary_configmap == canary
    assert by_kind(docs)[("ConfigMap", canary)]["metadata"]["labels"][CANARY_LABEL] == "true"
    if source == "controller":
        role = rbac[("Role", role_name)]
        assert role["metadata"]["namespace"] == NAMESPACE
        assert role["rules"] == [
            {
                "apiGroups": [""],
                "resources": ["secrets"],
                "resourceNames": [f"{fullname}-certificates"],
                "verbs": ["get", "update"],
            }
        ]
        role_binding = rbac[("RoleBinding", role_name)]
        assert role_binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role_name,
        }  # fmt: skip
        assert role_binding["subjects"] == subjects
    assert one(docs, "ServiceAccount")["metadata"]["name"] == fullname


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
        "ValidatingWebhookConfiguration", "Secret", "Role", "RoleBinding", "ClusterRole",
        "ClusterRoleBinding",
    }  # fmt: skip
    assert container(docs)["image"] == f"{PUBLISHED_IMAGE}:{project_version()}"
    check_controller_wiring(docs, "controller")
    # The certificate Secret: created empty, filled by the controller in the cluster.
    secret = one(docs, "Secret")
    assert secret["metadata"]["name"] == "pod-replace-guard-certificates"
    assert secret["type"] == "Opaque"
    assert set(secret) == {"apiVersion", "kind", "metadata", "type"}
    for name in ("certificates", "controller"):
        assert containers(docs)[name]["resources"] == CONTROLLER_RESOURCES
        assert containers(docs)[name]["env"] == [{"name": "PRG_CERT_DIR", "value": TLS_DIR}]
    settings = controller_settings(docs)
    assert (settings.ca_lifetime, settings.cert_lifetime) == ("730d", "90d")
    assert "PRG_NAMESPACE_SELECTOR" not in settings_env(docs)
    entry = registered_entry(docs)
    assert (entry["failurePolicy"], entry["timeoutSeconds"]) == ("Fail", 3)
    assert entry["clientConfig"]["service"] == {
        "namespace": NAMESPACE, "name": RELEASE, "path": "/validate", "port": 443,
    }  # fmt: skip


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
    entry = registered_entry(docs)
    assert entry["rules"][0]["resources"] == ["pods", "pods/ephemeralcontainers", "pods/resize"]
    # The API server skips the same identities and namespaces as the webhook.
    conditions = {c["name"]: c["expression"] for c in entry["matchConditions"]}
    assert cel_strings(conditions["not-exempt-user"]) == {"system:serviceaccount:tools:operator"}
    assert cel_strings(conditions["not-exempt-group"]) == {"platform-admins", "system:masters"}
    assert entry["namespaceSelector"]["matchExpressions"][0]["values"] == [
        "kube-system", "tools", "guard",
    ]  # fmt: skip
    assert entry["clientConfig"]["service"]["namespace"] == "guard"
    for doc in docs:
        if doc["kind"] in {"Role", "RoleBinding"}:
            assert doc["metadata"]["namespace"] == "guard"
        if doc["kind"] in {"RoleBinding", "ClusterRoleBinding"}:
            assert doc["subjects"][0]["namespace"] == "guard"


def check_cert_manager(docs: list[Doc]) -> None:
    assert "Secret" not in kinds(docs)
    check_controller_wiring(docs, "certManager")
    certificates = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Certificate"}
    assert set(certificates) == {"pod-replace-guard-ca", "pod-replace-guard-serving"}
    serving = certificates["pod-replace-guard-serving"]["spec"]
    assert serving["secretName"] == "pod-replace-guard-tls"
    assert "pod-replace-guard.pod-replace-guard.svc" in serving["dnsNames"]
    # The mounted Secret is cert-manager's; the controller registers its ca.crt (no
    # cainjector annotation: the configuration has none).
    assert volumes(docs)["tls"]["secret"]["secretName"] == "pod-replace-guard-tls"
    settings = controller_settings(docs)
    assert (settings.cert_secret, settings.ca_file) == ("", "")
    env = settings_env(docs)
    assert env["PRG_CERT_SECRET"] == ""
    assert "PRG_CA_LIFETIME" not in env
    assert "PRG_CERT_LIFETIME" not in env


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
    check_controller_wiring(docs, "existingSecret")
    assert volumes(docs)["tls"]["secret"]["secretName"] == "my-tls"
    # The CA goes into a ConfigMap mounted in the controller containers, named by
    # PRG_CA_FILE: the controller registers it as the caBundle.
    ca = by_kind(docs)[("ConfigMap", "pod-replace-guard-ca")]
    assert ca["data"] == {"ca.crt": PEM_CA}
    assert volumes(docs)["ca"] == {"name": "ca", "configMap": {"name": "pod-replace-guard-ca"}}
    controller = containers(docs)["controller"]
    assert mounts(controller)["ca"] == {
        "name": "ca", "mountPath": "/etc/pod-replace-guard/ca", "readOnly": True,
    }  # fmt: skip
    assert "ca" not in mounts(container(docs))
    settings = controller_settings(docs)
    assert settings.ca_file == "/etc/pod-replace-guard/ca/ca.crt"
    assert settings.cert_secret == ""
    assert "PRG_CA_FILE" not in container_environ(docs, "webhook")


def check_client_auth_network_policy(docs: list[Doc]) -> None:
    env = {e["name"]: e["value"] for e in container(docs)["env"]}
    assert env["PRG_CLIENT_CA"] == "/etc/pod-replace-guard/client-ca/ca.crt"
    client_ca = [d for d in docs if d["metadata"]["name"] == "pod-replace-guard-client-ca"]
    assert client_ca[0]["data"]["ca.crt"] == PEM_CA
    annotations = one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["checksum/client-ca"] == hashlib.sha256(PEM_CA.encode()).hexdigest()
    # Only the webhook container serves, so only it asks for client certificates.
    assert "PRG_CLIENT_CA" not in container_environ(docs, "controller")
    policy = one(docs, "NetworkPolicy")["spec"]
    assert len(policy["ingress"]) == 3
    assert policy["ingress"][0]["from"] == [{"ipBlock": {"cidr": "172.18.0.0/16"}}]
    assert policy["ingress"][1]["from"][-1] == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "prometheus"}}
    }
    # The controller's check that the Service answers TLS, from the webhook's own pods.
    assert policy["ingress"][2] == {
        "from": [{"podSelector": {"matchLabels": policy["podSelector"]["matchLabels"]}}],
        "ports": [{"port": "https", "protocol": "TCP"}],
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
    for item in containers(docs).values():
        assert item["image"] == "registry.example/prg@sha256:" + "a" * 64
    for name in ("certificates", "controller"):
        assert containers(docs)[name]["resources"] == {
            "requests": {"cpu": "20m", "memory": "64Mi"},
            "limits": {"memory": "256Mi"},
        }
    assert "PodDisruptionBudget" not in kinds(docs)
    check_controller_wiring(docs, "controller", fullname="guard")
    assert json.loads(settings_env(docs)["PRG_NAMESPACE_SELECTOR"]) == {
        "matchLabels": {"team": "apps"},
        "matchExpressions": [{"key": "tier", "operator": "Exists"}],
    }
    settings = controller_settings(docs)
    assert (settings.ca_lifetime, settings.cert_lifetime) == ("365d", "720h")
    entry = registered_entry(docs)
    assert (entry["failurePolicy"], entry["timeoutSeconds"]) == ("Ignore", 10)
    selector = entry["namespaceSelector"]
    assert selector["matchLabels"] == {"team": "apps"}
    assert selector["matchExpressions"][1] == {"key": "tier", "operator": "Exists"}
    assert entry["clientConfig"]["service"]["name"] == "guard"
    assert by_kind(docs)[("Secret", "guard-certificates")]["type"] == "Opaque"


def check_security_env_service_account(docs: list[Doc]) -> None:
    pod = pod_spec(docs)
    # Merged into the defaults: added keys and changed ids; runAsUser removed with null.
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsGroup": 65532,
        "fsGroup": 1000,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    extra = [
        {"name": "HTTPS_PROXY", "value": "http://proxy.internal:3128"},
        {"name": "PYTHONHASHSEED", "value": "0"},
        {"name": "BIG", "value": "1048576"},
        {"name": "DEBUG_TRACE", "value": "true"},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "proxy", "key": "token"}}},
    ]
    own = {
        "webhook": ["PRG_BIND", "PRG_CERT_DIR", "PROMETHEUS_MULTIPROC_DIR"],
        "certificates": ["PRG_CERT_DIR"],
        "controller": ["PRG_CERT_DIR"],
    }
    every = containers(docs)
    assert set(every) == set(own)
    for name, item in every.items():
        # The same securityContext in every container.
        assert item["securityContext"] == {
            "privileged": False,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seLinuxOptions": {"level": "s0:c123,c456"},
        }, name
        # extraEnv after the chart's own variables, in every container.
        env = item["env"]
        assert [e["name"] for e in env[: len(own[name])]] == own[name]
        assert env[len(own[name]) :] == extra, name
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
    "existing-secret": (source_values("existingSecret"), check_existing_secret),
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
            "controller": {
                "resources": {"requests": {"cpu": "20m"}, "limits": {"memory": "256Mi"}}
            },
            "image": {"repository": "registry.example/prg", "digest": "sha256:" + "a" * 64},
            "podDisruptionBudget": {"enabled": False},
            "certificates": {"controller": {"caLifetime": "365d", "certLifetime": "720h"}},
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
        if doc["kind"] not in {
            "ValidatingWebhookConfiguration", "ClusterRole", "ClusterRoleBinding",
        }:  # fmt: skip
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
    # generate (a CA and keys made at render time) is gone, values and all.
    "source generate": ({"certificates": {"source": "generate"}}, "/certificates/source"),
    "generate values": (
        {"certificates": {"generate": {"caDays": 3650}}},
        "'generate' not allowed",
    ),
    # The controller's lifetimes: a whole number and s, m, h or d (webhook/settings.py).
    **{
        f"controller {key} {value!r}": (
            {"certificates": {"controller": {key: value}}},
            f"/certificates/controller/{key}",
        )
        for key in ("caLifetime", "certLifetime")
        for value in ("90", "90 d", "1y", "1.5d", "", "d", "2160h0m0s", "1234567890d", 90)
    },
    **{
        f"controller {key} removed": (
            {"certificates": {"controller": {key: None}}},
            f"missing property '{key}'",
        )
        for key in ("caLifetime", "certLifetime")
    },
    "controller unknown value": (
        {"certificates": {"controller": {"keyAlgorithm": "RSA"}}},
        "'keyAlgorithm' not allowed",
    ),
    "controller resources unknown key": (
        {"controller": {"resources": {"claims": []}}},
        "'claims' not allowed",
    ),
    "controller unknown key": ({"controller": {"image": "x"}}, "'image' not allowed"),
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
    # The controller refuses these at start-up: its init container would never finish.
    "certificate outlives its CA": (
        [
            "--set",
            "certificates.controller.caLifetime=30d",
            "--set",
            "certificates.controller.certLifetime=31d",
        ],
        "certificates.controller.certLifetime must not be longer than caLifetime",
    ),
    "CA lifetime below 120 s": (
        [
            "--set",
            "certificates.controller.caLifetime=119s",
            "--set",
            "certificates.controller.certLifetime=60s",
        ],
        "certificates.controller.caLifetime must be at least 120 s",
    ),
    "certificate lifetime below 60 s": (
        ["--set", "certificates.controller.certLifetime=59s"],
        "certificates.controller.certLifetime must be at least 60 s",
    ),
    "CA lifetime beyond 36500 days": (
        ["--set", "certificates.controller.caLifetime=36501d"],
        "certificates.controller.caLifetime must be at most 36500d",
    ),
    "lifetime without the schema": (
        ["--skip-schema-validation", "--set", "certificates.controller.caLifetime=2y"],
        "certificates.controller.caLifetime must be a whole number and a unit",
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


# --- the controller ---------------------------------------------------------------------


@pytest.mark.parametrize("case", ["minimum", "longest"])
def test_lifetimes_the_controller_accepts(helm: str, case: str) -> None:
    """The bounds of webhook/settings.py are the chart's: what renders, starts."""
    ca, cert = {"minimum": ("120s", "1m"), "longest": ("36500d", "36500d")}[case]
    docs = helm_template_args(
        helm,
        "--set", f"certificates.controller.caLifetime={ca}",
        "--set", f"certificates.controller.certLifetime={cert}",
    )  # fmt: skip
    settings = controller_settings(docs)
    assert (settings.ca_lifetime, settings.cert_lifetime) == (ca, cert)


@pytest.mark.parametrize("source", SOURCES)
def test_every_container_starts_with_valid_settings(helm: str, tmp_path: Path, source: str) -> None:
    """Each container's whole environment passes the settings' own checks (an unknown
    PRG_* name or a bad value would stop it at start-up)."""
    docs = template(helm, tmp_path, source_values(source))
    for name in containers(docs):
        environ = container_environ(docs, name)
        settings = load_settings(environ)
        assert settings.namespace == NAMESPACE
        assert settings.cert_dir == TLS_DIR
    # The chart's own names, as the controller reads them.
    settings = controller_settings(docs)
    vwc = one(docs, "ValidatingWebhookConfiguration")["metadata"]["name"]
    service = one(docs, "Service")["metadata"]["name"]
    assert (settings.webhook_configuration, settings.service) == (vwc, service)
    if source == "controller":
        assert by_kind(docs)[("Secret", settings.cert_secret)]["type"] == "Opaque"
    # The entry it would register calls the Service on its https port.
    entry = registered_entry(docs)
    assert entry["name"] == WEBHOOK_NAME
    port = one(docs, "Service")["spec"]["ports"][0]
    assert (port["name"], port["port"]) == ("https", entry["clientConfig"]["service"]["port"])


@pytest.mark.parametrize("source", SOURCES)
def test_rbac_is_exactly_by_name(helm: str, tmp_path: Path, source: str) -> None:
    docs = template(helm, tmp_path, source_values(source))
    check_rbac(docs, source)
    check_no_entry(docs)


# Every template that renders at all, with each source: rendering twice gives the same
# bytes (nothing random, no lookup), and no key material is ever in the output.
EVERYTHING_ON: Doc = {
    "clientAuth": {"enabled": True, "caCertificate": PEM_CA},
    "networkPolicy": {"enabled": True, "cidrs": ["172.18.0.0/16"]},
    "monitoring": {
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "dashboard": {"enabled": True},
    },
}


@pytest.mark.parametrize("everything", [False, True], ids=["defaults", "everything-on"])
@pytest.mark.parametrize("source", SOURCES)
def test_rendering_is_deterministic_without_key_material(
    helm: str, tmp_path: Path, source: str, everything: bool
) -> None:
    values = {**source_values(source), **(EVERYTHING_ON if everything else {})}
    first = template_text(helm, tmp_path, values)
    second = template_text(helm, tmp_path, values)
    assert first.encode() == second.encode()
    assert "PRIVATE KEY" not in first
    docs = [doc for doc in yaml.safe_load_all(first) if doc]
    for doc in docs:
        if doc["kind"] == "Secret":
            assert doc["metadata"]["name"] == "pod-replace-guard-certificates"
            assert "data" not in doc
            assert "stringData" not in doc
    # The only certificates in the output are the CAs the values gave (public).
    given = (source == "existingSecret") + everything
    assert first.count("BEGIN CERTIFICATE") == given
    check_no_entry(docs)


def test_rules_and_dashboard_copies_are_identical() -> None:
    """Helm reads only inside the chart: files/ holds copies of deploy/monitoring/."""
    for name in ("prometheus-rules.yaml", "grafana-dashboard.json"):
        assert (CHART / "files" / name).read_bytes() == (MONITORING / name).read_bytes(), name


# --- the defaults against deploy/ -------------------------------------------------------

# Objects only one side has: the chart does not own the release namespace (Helm
# creates it with --create-namespace).
ONLY_KUSTOMIZE = {("Namespace", "pod-replace-guard")}
ONLY_CHART: set[tuple[str, str]] = set()
HASHED_CONFIGMAP = re.compile(r"^pod-replace-guard-settings-[a-z0-9]{10}$")
# Settings the chart's ConfigMap always names (from its values) where settings.env may
# leave the webhook's built-in default: allowed only at that default.
EXPLICIT_DEFAULTS = {
    "PRG_FAILURE_POLICY": "failure_policy",
    "PRG_TIMEOUT_SECONDS": "timeout_seconds",
    "PRG_CA_LIFETIME": "ca_lifetime",
    "PRG_CERT_LIFETIME": "cert_lifetime",
}


def normalise_kustomize(doc: Doc) -> Doc:
    doc = copy.deepcopy(doc)
    if doc["kind"] == "ConfigMap" and "data" in doc:
        # The settings: kustomize's configMapGenerator appends a hash of the contents to the name.
        assert HASHED_CONFIGMAP.match(doc["metadata"]["name"]), doc["metadata"]["name"]
        doc["metadata"]["name"] = "pod-replace-guard"
    if doc["kind"] == "Deployment":
        pod = doc["spec"]["template"]["spec"]
        for item in [*pod.get("initContainers", []), *pod["containers"]]:
            ref = item["envFrom"][0]["configMapRef"]
            assert HASHED_CONFIGMAP.match(ref["name"]), (item["name"], ref["name"])
            ref["name"] = "pod-replace-guard"
            # The image: deploy/ says pod-replace-guard:dev, the chart the published image
            # at its appVersion.
            assert item["image"] == "pod-replace-guard:dev", item["name"]
            item["image"] = f"{PUBLISHED_IMAGE}:{project_version()}"
    return doc


def normalise_chart(doc: Doc, theirs: Doc | None) -> Doc:
    doc = copy.deepcopy(doc)
    labels = doc["metadata"]["labels"]
    assert set(labels) >= HELM_LABELS, labels
    for key in HELM_LABELS:
        del labels[key]
    if doc["kind"] == "Deployment":
        annotations = doc["spec"]["template"]["metadata"]["annotations"]
        assert re.fullmatch(r"[0-9a-f]{64}", annotations.pop("checksum/settings"))
        annotations.pop("checksum/client-ca", None)
    if doc["kind"] == "ConfigMap" and theirs is not None and "data" in doc:
        defaults = Settings()
        for key, field in EXPLICIT_DEFAULTS.items():
            if key in doc["data"] and key not in theirs["data"]:
                value = doc["data"].pop(key)
                assert value == str(getattr(defaults, field)), (key, value)
    return doc


@pytest.fixture(scope="module")
def kubectl() -> str:
    found = find_kubectl()
    if found is None:
        reason = "kubectl not found (not on PATH, no $KUBECTL): cannot render deploy/"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        print(f"\nSKIPPING: {reason}")
        pytest.skip(reason)
    return found


def compare(chart_docs: list[Doc], kustomize_docs: list[Doc], only_kustomize: set[Any]) -> None:
    chart = by_kind(chart_docs)
    kustomize = by_kind([normalise_kustomize(doc) for doc in kustomize_docs])
    assert set(kustomize) - set(chart) == only_kustomize
    assert set(chart) - set(kustomize) == ONLY_CHART
    for key in sorted(set(chart) & set(kustomize)):
        theirs = kustomize[key]
        ours = normalise_chart(chart[key], theirs)
        assert ours == theirs, (
            f"{key}: chart\n{yaml.safe_dump(ours)}\nkustomize\n{yaml.safe_dump(theirs)}"
        )


def test_defaults_render_deploy(helm: str, tmp_path: Path, kubectl: str) -> None:
    compare(template(helm, tmp_path, {}), render(kubectl, "deploy"), ONLY_KUSTOMIZE)


def test_cert_manager_renders_the_overlay(helm: str, tmp_path: Path, kubectl: str) -> None:
    """certificates.source certManager renders deploy/overlays/cert-manager: its
    Issuers and Certificates, no init container, cert-manager's Secret mounted,
    PRG_CERT_SECRET empty, no certificate Secret and no Role for one."""
    chart = template(helm, tmp_path, {"certificates": {"source": "certManager"}})
    compare(chart, render(kubectl, "deploy/overlays/cert-manager"), ONLY_KUSTOMIZE)
