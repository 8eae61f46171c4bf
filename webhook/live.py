"""What the API server itself says about replacing a pod (``check --live``).

A server-side dry-run update (``dryRun=All``) runs everything a real ``kubectl
replace`` runs, defaulting, the API server's own validation (``ValidatePodUpdate``)
and admission, and stores nothing. The object it answers with is what the API server
would store, so the replace rules judge that rather than the manifest as written.

The kubernetes client is the ``live`` extra (``pip install 'pod-replace-guard[live]'``):
the webhook itself never talks to the API server, so its image leaves it out.
"""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final

# The webhook's name in deploy/ (and so in the API server's denial messages).
WEBHOOK_NAME: Final = "pods.pod-replace-guard.io"
_WEBHOOK_DENIED: Final = "admission webhook "
_POLICY_DENIED: Final = "ValidatingAdmissionPolicy "


class LiveError(Exception):
    """The cluster could not answer; the message is one line for the CLI."""


class PodChanged(LiveError):
    """The API server refused the update's resourceVersion (409 Conflict): the pod was
    written after the version the update was made from. Optimistic concurrency, not a
    verdict on the change."""


@dataclass(frozen=True)
class DryRun:
    """The API server's answer to a dry-run replacement.

    ``stored`` is the object it would store when it accepts the update. When it refuses,
    ``refused_by`` names the layer: ``api-server`` (its own validation, which runs before
    any validating admission), ``admission-webhook`` or ``admission-policy``, with
    ``refuser`` the webhook's or policy's name and ``fields`` the paths its Status names.
    Messages are not kept: the API server's can quote field values.
    """

    stored: dict[str, Any] | None
    refused_by: str = ""
    refuser: str = ""
    fields: list[str] = field(default_factory=list)


_CONNECT_FAILURES: Final = (
    ("refused", "connection refused"),
    ("No route", "no route to host"),
    ("unreachable", "network unreachable"),
    ("not known", "its host name does not resolve"),
    ("resolution", "its host name does not resolve"),
    ("nodename", "its host name does not resolve"),
)


def unreachable(error: BaseException, host: str) -> LiveError:
    """The one line for a request the API server never answered (refused, timed out,
    TLS failed, ...): urllib3's errors are not OSErrors, and their text is a paragraph."""
    reason = getattr(error, "reason", None) or error
    name = type(reason).__name__
    if "NewConnectionError" in name or isinstance(reason, ConnectionError):
        said = str(reason)
        text = next((what for cue, what in _CONNECT_FAILURES if cue in said), "cannot connect")
    elif "Timeout" in name or isinstance(reason, TimeoutError):
        text = "timed out"
    elif "SSL" in name or "SSL" in str(reason)[:40]:
        text = "TLS failed (is the kubeconfig's certificate authority right?)"
    elif isinstance(reason, ValueError):
        return LiveError(f"the API server at {host or 'the kubeconfig server'} answered no JSON")
    elif "Protocol" in name or isinstance(reason, ConnectionError):
        text = "the connection broke"
    else:
        text = name
    return LiveError(f"cannot reach the API server at {host or 'the kubeconfig server'}: {text}")


# How long one request to the API server may take in all, reading included (the README's
# "a request waits 30 s, 60 s for the schema").
REQUEST_SECONDS: Final = 30.0
SCHEMA_SECONDS: Final = 60.0


@contextmanager
def time_limit(seconds: float, what: str) -> Iterator[None]:
    """Raise LiveError when the block takes longer than ``seconds`` in all.

    The client's timeout bounds each read of the socket, so a server that sends its
    headers and then one byte a second never trips it. A timer signal does; it needs
    the main thread (the CLI's), and elsewhere the client's own timeouts are all.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise LiveError(f"{what}: no complete answer within {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def transport_errors() -> tuple[type[BaseException], ...]:
    """The exceptions a request raises when the API server does not answer."""
    try:
        from urllib3.exceptions import HTTPError
    except ImportError:  # pragma: no cover - urllib3 comes with the kubernetes client
        return (OSError, ValueError)
    return (HTTPError, OSError, ValueError)


def host_of(api: Any) -> str:
    """The API server URL an API client talks to."""
    return str(getattr(getattr(api, "configuration", None), "host", "") or "")


def kube_api_client(kubeconfig: str | None, context: str | None) -> Any:
    """An API client for a kubeconfig (``check --live``, ``policy --live``).

    Raises LiveError when the client is not installed or the kubeconfig cannot be used.
    """
    try:
        from kubernetes import config
        from kubernetes.config.config_exception import ConfigException
    except ImportError as error:
        raise LiveError(
            "--live needs the kubernetes client: pip install 'pod-replace-guard[live]'"
        ) from error
    from kubernetes.client import Configuration
    from urllib3.util.retry import Retry

    configuration = type.__call__(Configuration)
    # A refused connection is tried again (it fails at once); a read that timed out is
    # not: urllib3's default would wait out the timeout four times before the one line.
    configuration.retries = Retry(total=3, connect=3, read=0, status=0, redirect=0)
    try:
        return config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, context=context, client_configuration=configuration
        )
    except ConfigException as error:
        raise LiveError(f"cannot load kubeconfig: {error}") from error
    except (OSError, ValueError) as error:
        raise LiveError(f"cannot load kubeconfig: {type(error).__name__}") from error


class Cluster:
    """The cluster of a kubeconfig, through the kubernetes client."""

    def __init__(self, kubeconfig: str | None, context: str | None) -> None:
        api = kube_api_client(kubeconfig, context)
        from kubernetes import client, config

        # The namespace of the chosen context, as kubectl uses it (the file loaded).
        try:
            contexts, current = config.list_kube_config_contexts(kubeconfig)  # type: ignore[no-untyped-call]
        except Exception as error:
            raise LiveError(f"cannot load kubeconfig: {type(error).__name__}") from error
        chosen = context or current["name"]
        self.default_namespace: str = (
            next((e["context"].get("namespace") for e in contexts if e["name"] == chosen), None)
            or "default"
        )
        # Raw JSON in and out (_preload_content=False): a pod as the API server writes
        # it, with no round trip through the client's typed models.
        self._core: Any = client.CoreV1Api(api)
        self.host = host_of(api)

    def read_pod(self, name: str, namespace: str) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        try:
            with time_limit(REQUEST_SECONDS, f"reading pod {namespace}/{name}"):
                response = self._core.read_namespaced_pod(
                    name, namespace, _preload_content=False, _request_timeout=REQUEST_SECONDS
                )
                pod = json.loads(response.data)
        except ApiException as error:
            if not error.status:  # the client's own: TLS failed, ...
                raise unreachable(error, self.host) from error
            raise LiveError(
                f"cannot read pod {namespace}/{name}: {error.status} {error.reason}"
            ) from error
        except transport_errors() as error:
            raise unreachable(error, self.host) from error
        if not isinstance(pod, dict):
            raise LiveError(f"the API server's answer for pod {namespace}/{name} is not a Pod")
        return pod

    def dry_run_replace(self, manifest: dict[str, Any], name: str, namespace: str) -> DryRun:
        from kubernetes.client.exceptions import ApiException

        try:
            with time_limit(REQUEST_SECONDS, f"the dry run of pod {namespace}/{name}"):
                response = self._core.replace_namespaced_pod(
                    name, namespace, manifest, dry_run="All", _preload_content=False,
                    _request_timeout=REQUEST_SECONDS,
                )  # fmt: skip
                stored = json.loads(response.data)
        except ApiException as error:
            if not error.status:
                raise unreachable(error, self.host) from error
            return refusal(error.status, error.body, name)
        except transport_errors() as error:
            raise unreachable(error, self.host) from error
        if not isinstance(stored, dict):
            raise LiveError(f"the API server's dry run of pod {name} answered no Pod")
        return DryRun(stored)


def refusal(status: int, body: object, name: str) -> DryRun:
    """Which layer refused a dry-run update, from the API server's Status body.

    Raises LiveError when the answer is not a verdict on the object (not found, no
    permission, a webhook that could not be called, ...), PodChanged for a Conflict.
    """
    try:
        decoded = json.loads(body) if isinstance(body, str | bytes) else {}
    except ValueError:
        decoded = {}
    document = decoded if isinstance(decoded, dict) else {}
    message = str(document.get("message") or "")
    details = document.get("details") or {}
    causes = details.get("causes") if isinstance(details, dict) else None
    fields = [
        str(cause["field"])
        for cause in causes or []
        if isinstance(cause, dict) and cause.get("field")
    ]
    if message.startswith(_WEBHOOK_DENIED) and " denied the request" in message:
        webhook = message[len(_WEBHOOK_DENIED) :].split(" denied the request", 1)[0]
        return DryRun(None, "admission-webhook", webhook.strip('"'), fields)
    if message.startswith(_POLICY_DENIED) and " denied request" in message:
        policy = message[len(_POLICY_DENIED) :].split(" ", 1)[0]
        return DryRun(None, "admission-policy", policy.strip("'"), fields)
    if status == 422 and document.get("reason") == "Invalid":
        return DryRun(None, "api-server", "", fields)
    reason = str(document.get("reason") or "")
    if status == 409 and reason == "Conflict":
        raise PodChanged(f"pod {name} has changed since the version the replacement names")
    if "failed calling webhook" in message:
        reason += " (an admission webhook could not be called)"
    raise LiveError(
        f"the API server did not judge the replacement of pod {name}: {status} {reason}".rstrip()
    )
