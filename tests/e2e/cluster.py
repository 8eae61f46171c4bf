"""A real Kubernetes control plane for the end-to-end suite.

``local_control_plane`` starts etcd and kube-apiserver (built from Go modules by
``tests/e2e/controlplane/build.sh``) on loopback with generated certificates and an
admin identity in ``system:masters``, and tears everything down afterwards, even on
failure. ``existing_cluster`` uses the current kubeconfig context instead (kind).

Nothing here is a fake: the API server runs its own validation, defaulting and the
whole admission chain, and calls the webhook over TLS like any cluster does.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.server import free_port, stop_process

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "tests" / "e2e" / "controlplane" / "build.sh"
WEBHOOK_CONFIGURATION = "pod-replace-guard"


class ControlPlaneUnavailable(RuntimeError):
    """The binaries cannot be built here (no Go toolchain)."""


def build_binaries(version: str | None = None) -> Path:
    """Build (or reuse from the cache) kube-apiserver, etcd and kubectl."""
    if shutil.which("go") is None:
        raise ControlPlaneUnavailable(
            "the Go toolchain is not installed (needed to build kube-apiserver)"
        )
    env = dict(os.environ)
    if version:
        env["K8S_VERSION"] = version
    result = subprocess.run(
        [str(BUILD_SCRIPT)], capture_output=True, text=True, env=env, timeout=3600, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"building the control plane failed:\n{result.stderr[-4000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


# --- certificates ---------------------------------------------------------------


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _certificate(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None,
    *,
    ca: bool = False,
    sans: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    signer_key, issuer_name = (issuer[0], issuer[1].subject) if issuer else (key, subject)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(signer_key, hashes.SHA256())


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


@dataclass
class _Pki:
    ca_file: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: bytes
    admin_key: bytes
    ca_pem: bytes
    sa_key: Path
    sa_pub: Path


def _make_pki(directory: Path) -> _Pki:
    import ipaddress

    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _certificate(_name("e2e-kubernetes-ca"), ca_key, None, ca=True)
    serving_key = ec.generate_private_key(ec.SECP256R1())
    serving_cert = _certificate(
        _name("kube-apiserver"),
        serving_key,
        (ca_key, ca_cert),
        sans=[
            x509.DNSName("localhost"),
            x509.DNSName("kubernetes.default.svc"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ],
    )
    admin_key = ec.generate_private_key(ec.SECP256R1())
    admin_cert = _certificate(_name("e2e-admin", "system:masters"), admin_key, (ca_key, ca_cert))
    sa_key = ec.generate_private_key(ec.SECP256R1())
    files = {
        "ca.crt": _pem_cert(ca_cert),
        "apiserver.crt": _pem_cert(serving_cert),
        "apiserver.key": _pem_key(serving_key),
        "sa.key": _pem_key(sa_key),
        "sa.pub": sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    }
    for name, data in files.items():
        path = directory / name
        path.write_bytes(data)
        path.chmod(0o600)
    return _Pki(
        ca_file=directory / "ca.crt",
        serving_cert=directory / "apiserver.crt",
        serving_key=directory / "apiserver.key",
        admin_cert=_pem_cert(admin_cert),
        admin_key=_pem_key(admin_key),
        ca_pem=_pem_cert(ca_cert),
        sa_key=directory / "sa.key",
        sa_pub=directory / "sa.pub",
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _write_kubeconfig(path: Path, server: str, pki: _Pki) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "e2e",
                "cluster": {"server": server, "certificate-authority-data": _b64(pki.ca_pem)},
            }
        ],
        "users": [
            {
                "name": "e2e-admin",
                "user": {
                    "client-certificate-data": _b64(pki.admin_cert),
                    "client-key-data": _b64(pki.admin_key),
                },
            }
        ],
        "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "e2e-admin"}}],
        "current-context": "e2e",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)


# --- the control plane ----------------------------------------------------------


@dataclass
class ControlPlane:
    """A cluster to test against: a kubeconfig and the kubectl to use with it."""

    kubeconfig: Path
    kubectl_path: Path
    local: bool
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    log_dir: Path | None = None
    # The API server's audit log (JSON lines), on the local control plane only.
    audit_log: Path | None = None

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        command = [str(self.kubectl_path), "--kubeconfig", str(self.kubeconfig), *args]
        result = subprocess.run(
            command, capture_output=True, text=True, input=input, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}"
            )
        return result

    def api_client(self) -> Any:
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))  # type: ignore[no-untyped-call]

    def core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.api_client())

    def apply(self, manifest: dict[str, Any] | list[dict[str, Any]], *args: str) -> None:
        # One JSON document: a List when there are several (kubectl before 1.33 reads
        # a stream that starts as JSON as JSON only, and stops at a "---").
        documents = manifest if isinstance(manifest, list) else [manifest]
        whole = {"apiVersion": "v1", "kind": "List", "items": documents}
        text = json.dumps(documents[0] if len(documents) == 1 else whole)
        self.kubectl("apply", "-f", "-", *args, input=text)

    def server_version(self) -> str:
        result = self.kubectl("version", "-o", "json")
        data = json.loads(result.stdout)
        return str(data["serverVersion"]["gitVersion"])

    def server_release(self) -> tuple[int, int]:
        """(major, minor) of the API server, for the few tests of a feature that a
        release does not have."""
        major, minor = self.server_version().lstrip("v").split(".")[:2]
        return int(major), int(minor)


def _wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.25) -> None:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception as error:
            last_error = error
        time.sleep(interval)
    raise TimeoutError(f"{what} not ready within {timeout}s (last error: {last_error})")


# Pod writes at Metadata level: enough for admission webhooks' audit annotations, which
# the API server records on the event of the request they judged.
AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
    verbs: ["update", "patch"]
    resources:
      - group: ""
        resources: ["pods"]
  - level: None
"""


def audit_events(plane: ControlPlane) -> list[dict[str, Any]]:
    """The API server's audit events so far (local control plane only)."""
    if plane.audit_log is None or not plane.audit_log.exists():
        return []
    lines = plane.audit_log.read_text(errors="replace").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


@contextlib.contextmanager
def local_control_plane(work_dir: Path, version: str | None = None) -> Iterator[ControlPlane]:
    """etcd + kube-apiserver on loopback; torn down on exit, even on failure."""
    bin_dir = build_binaries(version)
    work_dir.mkdir(parents=True, exist_ok=True)
    pki = _make_pki(work_dir / "pki")
    etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
    logs = work_dir / "logs"
    logs.mkdir(exist_ok=True)
    plane = ControlPlane(
        work_dir / "kubeconfig",
        bin_dir / "kubectl",
        local=True,
        log_dir=logs,
        audit_log=logs / "audit.log",
    )
    audit_policy = work_dir / "audit-policy.yaml"
    audit_policy.write_text(AUDIT_POLICY)
    try:
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        plane.processes.append(
            _spawn(
                [
                    str(bin_dir / "etcd"),
                    "--name=e2e",
                    f"--data-dir={work_dir / 'etcd'}",
                    f"--listen-client-urls={etcd_url}",
                    f"--advertise-client-urls={etcd_url}",
                    f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                    f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                    f"--initial-cluster=e2e=http://127.0.0.1:{peer_port}",
                    "--unsafe-no-fsync=true",  # a throw-away store: speed over durability
                    "--log-level=warn",
                ],
                logs / "etcd.log",
            )
        )
        plane.processes.append(
            _spawn(
                [
                    str(bin_dir / "kube-apiserver"),
                    f"--etcd-servers={etcd_url}",
                    "--bind-address=127.0.0.1",
                    "--advertise-address=127.0.0.1",
                    f"--secure-port={api_port}",
                    f"--tls-cert-file={pki.serving_cert}",
                    f"--tls-private-key-file={pki.serving_key}",
                    f"--client-ca-file={pki.ca_file}",
                    "--authorization-mode=Node,RBAC",
                    "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                    f"--service-account-key-file={pki.sa_pub}",
                    f"--service-account-signing-key-file={pki.sa_key}",
                    "--service-cluster-ip-range=10.96.0.0/24",
                    "--endpoint-reconciler-type=none",
                    "--profiling=false",
                    f"--cert-dir={work_dir / 'apiserver-certs'}",
                    f"--audit-policy-file={audit_policy}",
                    f"--audit-log-path={plane.audit_log}",
                    "--audit-log-format=json",
                    # Written as events happen, so a test reads them right away.
                    "--audit-log-mode=blocking",
                    "--v=1",
                ],
                logs / "kube-apiserver.log",
            )
        )
        _write_kubeconfig(plane.kubeconfig, f"https://127.0.0.1:{api_port}", pki)

        def ready() -> bool:
            for process in plane.processes:
                if process.poll() is not None:
                    raise RuntimeError(f"{process.args!r} exited; see {logs}")
            result = plane.kubectl("get", "--raw", "/readyz", check=False, timeout=10)
            return result.returncode == 0 and result.stdout.strip() == "ok"

        try:
            _wait_for(ready, 120, "kube-apiserver")
            # The default ServiceAccount is normally made by kube-controller-manager,
            # which this control plane does not run.
            _wait_for(
                lambda: plane.kubectl("get", "namespace", "default", check=False).returncode == 0,
                30,
                "namespace default",
            )
        except (TimeoutError, RuntimeError) as error:
            tail = (logs / "kube-apiserver.log").read_text(errors="replace")[-4000:]
            raise RuntimeError(f"{error}\n--- kube-apiserver log ---\n{tail}") from error
        yield plane
    finally:
        for process in reversed(plane.processes):
            stop_process(process, 15)


def _spawn(command: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


@contextlib.contextmanager
def existing_cluster() -> Iterator[ControlPlane]:
    """The cluster of the current kubeconfig (kind), with the webhook deployed in it."""
    kubeconfig = Path(os.environ.get("KUBECONFIG", str(Path.home() / ".kube" / "config")))
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise ControlPlaneUnavailable("kubectl is not installed")
    yield ControlPlane(kubeconfig, Path(kubectl), local=False)


# --- the webhook configuration from deploy/ ------------------------------------


def rendered_manifests(plane: ControlPlane, directory: str = "deploy") -> list[dict[str, Any]]:
    """``kubectl kustomize`` of a directory of deploy/, as a list of objects."""
    result = plane.kubectl("kustomize", str(REPO / directory))
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def webhook_configuration(plane: ControlPlane) -> dict[str, Any]:
    """deploy/'s ValidatingWebhookConfiguration with the entry its controller registers
    (built from deploy/'s settings, as webhook/registration.py builds it in the pod)."""
    from webhook.registration import webhook_entry
    from webhook.settings import load_settings

    docs = rendered_manifests(plane)
    settings_map = next(
        d for d in docs if d.get("kind") == "ConfigMap" and "PRG_MODE" in (d.get("data") or {})
    )
    settings = load_settings(environ=settings_map["data"])
    for doc in docs:
        if doc.get("kind") == "ValidatingWebhookConfiguration":
            assert "webhooks" not in doc, "deploy/ must create the configuration with no entry"
            return {**doc, "webhooks": [webhook_entry(settings, "")]}
    raise AssertionError("deploy/ renders no ValidatingWebhookConfiguration")


def install_webhook(
    plane: ControlPlane,
    url: str,
    ca_bundle_b64: str,
    failure_policy: str = "Fail",
    timeout_seconds: int | None = None,
    resources: list[str] | None = None,
) -> dict[str, Any]:
    """Apply deploy/'s ValidatingWebhookConfiguration with a url clientConfig.

    The url and caBundle are the only differences from the in-cluster install
    (plus the failure policy, timeout and resources when a test asks for them).
    """
    config = webhook_configuration(plane)
    for hook in config["webhooks"]:
        hook["clientConfig"] = {"url": url, "caBundle": ca_bundle_b64}
        hook["failurePolicy"] = failure_policy
        if timeout_seconds is not None:
            hook["timeoutSeconds"] = timeout_seconds
        if resources is not None:
            hook["rules"][0]["resources"] = resources
    plane.apply(config)
    return config


def remove_webhook(plane: ControlPlane) -> None:
    plane.kubectl(
        "delete", "validatingwebhookconfiguration", WEBHOOK_CONFIGURATION, "--ignore-not-found"
    )
