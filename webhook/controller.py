"""Keeps the webhook's certificates renewed and its webhook configuration registered.

``pod-replace-guard controller`` runs beside the server in every replica (a second
container of the pod; ``--once`` as its init container). Each sync:

1. **Certificates** (``PRG_CERT_SECRET`` set): reads the Secret, asks
   :func:`webhook.rotation.plan` what it should hold now, writes it back if that
   changed (optimistic concurrency: of several replicas one wins, the others read
   again next time), and copies the serving certificate and key into ``PRG_CERT_DIR``,
   which the server reloads. Without ``PRG_CERT_SECRET`` the certificate comes from
   files (cert-manager, a Secret of your own) and only the CA is read, from
   ``PRG_CA_FILE``.
2. **Registration** (``PRG_WEBHOOK_CONFIGURATION`` set): the install creates the
   ValidatingWebhookConfiguration with no webhook entries, which refuses nothing. The
   entry (:func:`webhook.registration.webhook_entry`, built from the settings) is
   written into it with the CA bundle only once the webhook's Service answers TLS with
   a certificate that bundle trusts, and (``PRG_CANARY_CONFIGMAP`` set) once the API
   server itself has reached the webhook through the canary entry
   (:func:`webhook.registration.canary_entry`): a webhook that cannot start, or that
   the API server cannot reach (a NetworkPolicy, a firewall, a client certificate it
   does not trust), never registers, so it never refuses an update. Afterwards the
   caBundle is kept current, and the entry is rewritten only when the settings change
   it (an upgrade), so a deliberate edit of the live entry stays.

It needs exactly: get and update of that one Secret and that one webhook
configuration, and patch of the canary ConfigMap, by name (docs/operations.md,
"Permissions").
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import logging
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

from webhook.certs import CA_CERT, TLS_CERT, TLS_KEY, serving_names, write_file
from webhook.registration import (
    CANARY_ANNOTATION,
    CANARY_LABEL,
    CANARY_NAME,
    DIGEST_ANNOTATION,
    STARTED_ANNOTATION,
    WEBHOOK_NAME,
    canary_entry,
    canary_message,
    canary_token,
    entry_digest,
    webhook_entry,
)
from webhook.rotation import Lifetimes, Material, plan, safe_to_serve
from webhook.settings import Settings, duration_seconds

log = logging.getLogger("pod_replace_guard.controller")

# Secret keys (PEM). ca-bundle.crt is what the API server must trust.
SECRET_KEYS: Final = {
    "ca_cert": "ca.crt",
    "ca_key": "ca.key",
    "tls_cert": "tls.crt",
    "tls_key": "tls.key",
    "bundle": "ca-bundle.crt",
}
PROBE_TIMEOUT_SECONDS: Final = 3.0
# After writing the canary entry, the wait before the dry run: an API server loads a
# changed configuration within about a second.
CANARY_SETTLE_SECONDS: Final = 2.0
# How long after writing the canary entry a dry run that went through unjudged is
# taken for an API server that has not loaded the entry yet (tried again soon, said
# quietly) rather than for one that cannot reach the webhook.
CANARY_PATIENCE: Final = datetime.timedelta(seconds=15)


class ControllerError(RuntimeError):
    """A sync cannot go on (a missing object, a bad template); the message says which."""


class Conflict(RuntimeError):
    """The object changed since it was read (another replica wrote it first)."""


class _CanaryWritten(Exception):
    """The canary entry was just written: the configuration read is stale, and the API
    server needs a moment before the dry run means anything."""


class Cluster(Protocol):
    def read_secret(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    def replace_secret(self, namespace: str, name: str, body: dict[str, Any]) -> None: ...
    def read_webhook_configuration(self, name: str) -> dict[str, Any] | None: ...
    def replace_webhook_configuration(self, name: str, body: dict[str, Any]) -> None: ...
    def canary_refusal(self, namespace: str, name: str, nonce: str) -> str:
        """Update the ConfigMap with dryRun=All, ``nonce`` in CANARY_ANNOTATION: ""
        when the API server accepted it, else why not (its message). Never raises for
        an answer of the API server."""
        ...


class KubeCluster:
    """The API server, through the kubernetes client, as plain dicts: fields this
    client version does not know (e.g. matchConditions) survive a read and a write."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client

        self._core = client.CoreV1Api(api_client)
        self._admission = client.AdmissionregistrationV1Api(api_client)

    def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            response = method(*args, _preload_content=False, _request_timeout=10, **kwargs)
        except ApiException as error:
            if error.status == 404:
                return None
            if error.status == 409:
                raise Conflict(str(error.reason)) from error
            # The Status message says what was refused (a 422 names the invalid field).
            detail = _status_message(error.body)
            raise ControllerError(
                f"the API server answered {error.status} {error.reason}"
                + (f": {detail}" if detail else "")
            ) from error
        data: dict[str, Any] = json.loads(response.data)
        return data

    def read_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._call(self._core.read_namespaced_secret, name, namespace)

    def replace_secret(self, namespace: str, name: str, body: dict[str, Any]) -> None:
        if self._call(self._core.replace_namespaced_secret, name, namespace, body) is None:
            raise ControllerError(f"Secret {namespace}/{name} was deleted")

    def read_webhook_configuration(self, name: str) -> dict[str, Any] | None:
        return self._call(self._admission.read_validating_webhook_configuration, name)

    def replace_webhook_configuration(self, name: str, body: dict[str, Any]) -> None:
        replace = self._admission.replace_validating_webhook_configuration
        if self._call(replace, name, body) is None:
            raise ControllerError(f"ValidatingWebhookConfiguration {name} was deleted")

    def canary_refusal(self, namespace: str, name: str, nonce: str) -> str:
        from kubernetes.client.exceptions import ApiException

        patch = {"metadata": {"annotations": {CANARY_ANNOTATION: nonce}}}
        try:
            self._core.patch_namespaced_config_map(
                name, namespace, patch, dry_run="All", _preload_content=False, _request_timeout=15
            )
        except ApiException as error:
            if error.status == 404:
                return f"ConfigMap {namespace}/{name} does not exist (the install creates it)"
            message = _status_message(error.body)
            return f"{error.status} {error.reason}" + (f": {message}" if message else "")
        return ""


def probe_target(entry: dict[str, Any]) -> tuple[str, int]:
    """Where the API server calls the entry: (host, port), as its client resolves it."""
    config = entry.get("clientConfig") or {}
    service = config.get("service")
    if isinstance(service, dict):
        host = f"{service.get('name')}.{service.get('namespace')}.svc"
        return host, int(service.get("port") or 443)
    url = urlsplit(str(config.get("url") or ""))
    if url.scheme != "https" or not url.hostname:
        raise ControllerError("PRG_WEBHOOK_URL: must be an https:// URL with a host")
    return url.hostname, url.port or 443


def _target_of(entry: dict[str, Any]) -> tuple[str, int] | None:
    """probe_target of a live entry, None when it has no usable target."""
    try:
        return probe_target(entry)
    except (ControllerError, ValueError):
        return None


def serves_trusted_certificate(host: str, port: int, bundle: bytes) -> str:
    """ "" when host:port completes a TLS handshake that ``bundle`` verifies (the
    API server's own check), else why not."""
    context = ssl.create_default_context(cadata=bundle.decode("ascii"))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # As Go's crypto/tls verifies for the API server: names from the SANs only (a
    # certificate with only a common name is refused), and a CA of the bundle that
    # is itself an intermediate is a trust anchor.
    context.hostname_checks_common_name = False
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    try:
        with (
            socket.create_connection((host, port), timeout=PROBE_TIMEOUT_SECONDS) as raw,
            context.wrap_socket(raw, server_hostname=host),
        ):
            return ""
    except ssl.SSLCertVerificationError as error:
        return (
            f"{host}:{port} serves a certificate the bundle does not trust ({error.verify_message})"
        )
    except (OSError, ssl.SSLError) as error:
        return f"{host}:{port} does not answer TLS ({type(error).__name__}: {error})"


def _status_message(body: object) -> str:
    """The message of a metav1.Status body ("" when it is none), clipped: it ends up in
    a log line."""
    try:
        decoded = json.loads(body) if isinstance(body, (str, bytes)) else None
    except (ValueError, RecursionError):
        return ""
    message = decoded.get("message") if isinstance(decoded, dict) else None
    return str(message)[:1000] if message else ""


def _canary_fields(entry: dict[str, Any]) -> dict[str, Any]:
    """What the controller owns of the canary entry: not the namespaceSelector, which
    some platforms extend (AKS's admissions enforcer adds its own expressions), so a
    rewrite never fights them."""
    return {key: value for key, value in entry.items() if key != "namespaceSelector"}


def _named(webhooks: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    return next((entry for entry in webhooks if entry.get("name") == name), None)


def _stale_bundles(webhooks: list[dict[str, Any]], ca_bundle: str) -> list[dict[str, Any]]:
    """Our entries (the pods entry, the canary) whose caBundle is not ``ca_bundle``."""
    return [
        entry
        for entry in webhooks
        if entry.get("name") in (WEBHOOK_NAME, CANARY_NAME)
        and (entry.get("clientConfig") or {}).get("caBundle") != ca_bundle
    ]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: object) -> bytes:
    """A Secret value, b"" when it is not base64."""
    try:
        return base64.b64decode(value, validate=True) if isinstance(value, str) else b""
    except ValueError:
        return b""


class Controller:
    def __init__(
        self,
        settings: Settings,
        cluster: Cluster,
        clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
        probe: Callable[[str, int, bytes], str] = serves_trusted_certificate,
        started: float | None = None,
    ) -> None:
        self._settings = settings
        self._cluster = cluster
        self._clock = clock
        self._probe = probe
        self._lifetimes = Lifetimes(
            ca=datetime.timedelta(seconds=duration_seconds(settings.ca_lifetime)),
            serving=datetime.timedelta(seconds=duration_seconds(settings.cert_lifetime)),
        )
        # With PRG_WEBHOOK_URL the API server checks the certificate against the URL's
        # host: the certificate names it too.
        hosts, self._ips = [], ["127.0.0.1"]
        if settings.webhook_url:
            host = urlsplit(settings.webhook_url).hostname or ""
            try:
                self._ips = list(dict.fromkeys([*self._ips, str(ipaddress.ip_address(host))]))
            except ValueError:
                hosts.append(host)
        self._names = serving_names(settings.service, settings.namespace, hosts)
        self._last_reason = ""
        # Set when the next pass should come soon (the canary entry was just written).
        self._retry_soon = False
        # When this controller last wrote the canary entry.
        self._canary_written = datetime.datetime.min.replace(tzinfo=datetime.UTC)
        # When this controller started (wall clock, shared by the replicas' nodes).
        self._started = started if started is not None else time.time()

    # --- certificates ---------------------------------------------------------------

    def _published(self, configuration: dict[str, Any] | None) -> bytes | None:
        """The caBundle our entries carry now (PEM), None when none is registered."""
        for entry in (configuration or {}).get("webhooks") or []:
            if entry.get("name") == WEBHOOK_NAME:
                bundle = (entry.get("clientConfig") or {}).get("caBundle") or ""
                try:
                    return base64.b64decode(bundle)
                except ValueError:
                    return b""
        return None

    def _sync_secret(self, configuration: dict[str, Any] | None) -> Material:
        namespace, name = self._settings.namespace, self._settings.cert_secret
        secret = self._cluster.read_secret(namespace, name)
        if secret is None:
            raise ControllerError(
                f"Secret {namespace}/{name} does not exist (the install creates it, empty)"
            )
        data = secret.get("data") or {}
        # One damaged field is one damaged field: the others (the CA) are kept.
        fields = {f: _unb64(data.get(key)) for f, key in SECRET_KEYS.items()}
        current = Material(**fields) if any(fields.values()) else None
        decision = plan(
            current,
            self._clock(),
            self._lifetimes,
            self._names,
            self._published(configuration),
            self._ips,
        )
        material = decision.material
        if material != current:
            secret["data"] = {
                **data,
                **{key: _b64(getattr(material, f)) for f, key in SECRET_KEYS.items()},
            }
            self._cluster.replace_secret(namespace, name, secret)
            log.info(
                "certificate Secret updated",
                extra={"event": "certificates-renewed", "secret": name, "reason": decision.reason},
            )
        return material

    def _write_files(self, material: Material) -> None:
        directory = Path(self._settings.cert_dir)
        directory.mkdir(parents=True, exist_ok=True)
        wanted = [
            (TLS_KEY, material.tls_key, True),
            (TLS_CERT, material.tls_cert, False),
            (CA_CERT, material.bundle, False),
        ]
        # Key before certificate: the server keeps its old pair until both match.
        for filename, content, private in wanted:
            path = directory / filename
            try:
                unchanged = path.read_bytes() == content
            except OSError:
                unchanged = False
            if not unchanged:
                write_file(path, content, private)

    def _bundle_from_file(self) -> bytes:
        path = Path(self._settings.ca_file or Path(self._settings.cert_dir) / CA_CERT)
        try:
            bundle = path.read_bytes()
        except OSError as error:
            raise ControllerError(f"PRG_CA_FILE: cannot read {path}: {error.strerror}") from error
        if b"BEGIN CERTIFICATE" not in bundle:
            raise ControllerError(f"PRG_CA_FILE: {path} holds no PEM certificate")
        return bundle

    # --- registration ---------------------------------------------------------------

    def _register(self, configuration: dict[str, Any] | None, bundle: bytes) -> bytes | None:
        """Register or update the entry; the bundle it carries afterwards (None: none)."""
        name = self._settings.webhook_configuration
        if configuration is None:
            raise ControllerError(
                f"ValidatingWebhookConfiguration {name} does not exist (the install creates it)"
            )
        desired = webhook_entry(self._settings, _b64(bundle))
        digest = entry_digest(desired)
        webhooks = configuration.get("webhooks") or []
        configuration["webhooks"] = webhooks
        mine = _named(webhooks, WEBHOOK_NAME)
        annotations = configuration.setdefault("metadata", {}).setdefault("annotations", {})
        ca_bundle = desired["clientConfig"]["caBundle"]
        entry_written = True
        try:
            written_by = float(annotations.get(STARTED_ANNOTATION) or 0)
        except ValueError:
            written_by = 0.0
        try:
            if mine is None:
                if not self._approved(configuration, desired, bundle, "not registering yet: "):
                    return None
                # First: `jsonpath={.webhooks[0]...}` (install.sh, the docs' break glass)
                # finds it there, before the canary's entry.
                webhooks.insert(0, desired)
                event = "webhook entry registered"
            elif (
                annotations.get(DIGEST_ANNOTATION) != digest
                # During a rollout, replicas with the old settings still run: only a
                # controller started no earlier than the entry's writer rewrites it, so
                # the old ones do not put their entry back.
                and self._started >= written_by
                # A new target (another Service, URL or port) must be reached first, like
                # the first registration: under Fail, one that is not refuses every
                # update. Meanwhile the live entry keeps getting the current caBundle.
                and (
                    _target_of(mine) == probe_target(desired)
                    or self._approved(
                        configuration,
                        desired,
                        bundle,
                        "not updating the entry to the new target yet: ",
                    )
                )
            ):
                webhooks[webhooks.index(mine)] = desired
                event = "webhook entry updated to the settings"
            elif stale := _stale_bundles(webhooks, ca_bundle):
                # Only the bundle: the digest and writer annotations stay the entry's writer's.
                for entry in stale:
                    entry.setdefault("clientConfig", {})["caBundle"] = ca_bundle
                event, entry_written = "caBundle updated", False
            else:
                return bundle
        except _CanaryWritten:
            return self._published(configuration)
        if entry_written:
            annotations[DIGEST_ANNOTATION] = digest
            annotations[STARTED_ANNOTATION] = f"{self._started:.3f}"
        self._cluster.replace_webhook_configuration(name, configuration)
        self._last_reason = ""
        log.info(event, extra={"event": "webhook-registered", "configuration": name})
        return bundle

    def _approved(
        self, configuration: dict[str, Any], entry: dict[str, Any], bundle: bytes, waiting: str
    ) -> bool:
        """Whether ``entry`` may be registered: its target answers TLS with a certificate
        ``bundle`` trusts, and (with a canary ConfigMap) the API server reached it.
        Raises _CanaryWritten after writing the canary entry for this target."""
        host, port = probe_target(entry)
        why_not = self._probe(host, port, bundle)
        if not why_not and self._settings.canary_configmap:
            try:
                why_not = self._canary(configuration, bundle, f"{host}:{port}")
            except ControllerError as error:
                why_not = f"the canary failed: {error}"
        if why_not:
            self._say(waiting + why_not, "registration-waiting")
        return not why_not

    def _canary(self, configuration: dict[str, Any], bundle: bytes, target: str) -> str:
        """ "" once the controller's dry run of the canary ConfigMap came back refused by
        the webhook's canary, for this target and this dry run; else why not. The
        canary entry goes to the same target as the entry waiting for approval; it is
        written first if it is not that already."""
        webhooks: list[dict[str, Any]] = configuration["webhooks"]
        desired = canary_entry(self._settings, _b64(bundle))
        live = _named(webhooks, CANARY_NAME)
        if live is None or _canary_fields(live) != _canary_fields(desired):
            if live is None:
                webhooks.append(desired)
            else:
                webhooks[webhooks.index(live)] = desired
            self._cluster.replace_webhook_configuration(
                self._settings.webhook_configuration, configuration
            )
            log.info("canary entry written", extra={"event": "canary-registered", "target": target})
            self._canary_written = self._clock()
            self._retry_soon = True
            raise _CanaryWritten
        namespace, name = self._settings.namespace, self._settings.canary_configmap
        nonce = secrets.token_hex(8)
        refusal = self._cluster.canary_refusal(namespace, name, nonce)
        expected = f'admission webhook "{CANARY_NAME}" denied the request: ' + canary_message(
            canary_token(self._settings), nonce
        )
        if expected in refusal:
            log.info(
                "the API server reached the webhook",
                extra={"event": "canary-reached", "target": target},
            )
            return ""
        if refusal:
            return (
                f"a dry-run update of ConfigMap {namespace}/{name} was refused, but not by"
                f" the webhook's canary at {target}: {refusal}"
            )
        if self._clock() - self._canary_written < CANARY_PATIENCE:
            # Most likely an API server that has not loaded the canary entry yet.
            self._retry_soon = True
            return f"the API server has not sent the canary's dry run to {target} yet"
        return (
            f"the API server did not reach the webhook at {target}: a dry-run update of"
            f" ConfigMap {namespace}/{name}, which the canary entry sends there, went through"
            " unjudged (its failurePolicy is Ignore). The webhook answers TLS from inside the"
            " cluster, so look between the API server and it: a NetworkPolicy or firewall"
            " that drops the API server's connections, a client certificate the webhook"
            f" does not trust (clientCA), or the ConfigMap without its label {CANARY_LABEL}=true"
        )

    def _say(self, reason: str, event: str) -> None:
        # A waiting controller repeats itself every sync: log a reason once.
        if reason != self._last_reason:
            log.warning(reason, extra={"event": event})
        self._last_reason = reason

    def _recovered(self) -> None:
        # A sync worked: the next failure is news again, even if it is the same one.
        if self._last_reason.startswith("sync failed"):
            log.info("sync works again", extra={"event": "controller-recovered"})
            self._last_reason = ""

    # --- the loop -------------------------------------------------------------------

    def sync(self, register: bool = True) -> None:
        """One pass. Raises ControllerError or Conflict; the caller tries again later."""
        name = self._settings.webhook_configuration
        configuration = self._cluster.read_webhook_configuration(name) if name else None
        published = self._published(configuration)
        if not self._settings.cert_secret:
            if register and name:
                self._register(configuration, self._bundle_from_file())
            return
        material = self._sync_secret(configuration)
        try:
            if register and name:
                published = self._register(configuration, material.bundle)
        finally:
            # Even when registering failed: a renewed certificate must not wait on it.
            # The bundle goes out before the certificate: a replica serves a
            # certificate only once the published bundle has trusted its CA for
            # PROPAGATION_GRACE (a Secret made again from nothing, say, is served only
            # then), or while nothing is registered (nothing depends on it), or when it
            # serves nothing yet.
            served = Path(self._settings.cert_dir) / TLS_CERT
            if not served.exists() or safe_to_serve(material.tls_cert, published, self._clock()):
                self._write_files(material)

    def run(self, stop: threading.Event, transport: tuple[type[BaseException], ...]) -> None:
        errors: tuple[type[BaseException], ...] = (ControllerError, *transport)
        while not stop.is_set():
            try:
                self.sync()
                self._recovered()
            except Conflict:
                pass  # another replica wrote first: read again next time
            except errors as error:
                self._say(f"sync failed: {error}", "controller-error")
            except Exception as error:
                # A bug, or an answer no one foresaw: log it and try again next time,
                # as for any other failure (the container does not restart for it).
                if f"sync failed: {error!r}" != self._last_reason:
                    log.exception("sync failed unexpectedly", extra={"event": "controller-error"})
                self._last_reason = f"sync failed: {error!r}"
            soon, self._retry_soon = self._retry_soon, False
            stop.wait(
                min(CANARY_SETTLE_SECONDS, self._settings.sync_seconds)
                if soon
                else self._settings.sync_seconds
            )


def sync_until_certificates(
    controller: Controller, transport: tuple[type[BaseException], ...], deadline: float
) -> str:
    """``--once``: sync certificates (no registration) until it works or ``deadline``
    (monotonic); "" on success, else the last error."""
    errors: tuple[type[BaseException], ...] = (ControllerError, *transport)
    last = ""
    while True:
        try:
            controller.sync(register=False)
            return ""
        except Conflict:
            last = "the Secret kept changing under us"
        except errors as error:
            last = str(error)
        if time.monotonic() >= deadline:
            return last
        time.sleep(1.0)
