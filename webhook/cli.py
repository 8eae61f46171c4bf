"""Command line: ``serve``, ``check``, ``certs``, ``client-cert``, ``policy``
(``pod-replace-guard``, ``python -m webhook``).

Every failure that is not a verdict exits 2 with one line on stderr and no traceback
(:func:`main`); ``check`` exits 0 when the update would be allowed, 1 when it would be
denied, and 3 when an offline check cannot tell (only fields the manifest omits differ,
which the API server may default). README.md, "Exit codes", has the table per command.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import traceback
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, Any, NoReturn

import yaml

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

from webhook import policy_command
from webhook.cli_support import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_NO,
    EXIT_OK,
    EXIT_UNKNOWN,
    OUTPUTS,
    PROG,
    UsageError,
    common_name,
    dns_label,
    dns_name,
    is_dns_label,
    is_object_name,
    positive_days,
    positive_seconds,
    read_source,
    refuse_unused,
    version,
    write_structured,
)
from webhook.review import MalformedReview
from webhook.settings import ConfigError, cautions, load_settings

__all__ = ["PROG", "UsageError", "main", "read_source"]

EXIT_ALLOWED, EXIT_DENIED, EXIT_BAD_INPUT = EXIT_OK, EXIT_NO, EXIT_ERROR

# Metadata the API server takes from the stored object when an update leaves it out
# (rest.BeforeUpdate), so a manifest without them compares like the server sees it.
# The namespace comes from the request's URL (rest.ValidNamespace), which for a
# replacement of the same pod is the old pod's.
SERVER_FILLED_METADATA = (
    "namespace",
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "resourceVersion",
    "generation",
    "managedFields",
    "selfLink",
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)

    def _print_message(self, message: str, file: SupportsWrite[str] | None = None) -> None:
        # argparse drops an OSError here: a closed pipe must reach main's handler.
        if message:
            (file or sys.stderr).write(message)


class AliasInManifest(yaml.YAMLError):
    """A YAML alias (``*name``): refused, as expanding one can cost exponential work."""


class _StringTimestampLoader(yaml.SafeLoader):
    """YAML without implicit timestamps (creationTimestamp stays a string, as in JSON)
    and without aliases: a 600-byte "billion laughs" of nested aliases expands to
    billions of nodes, and comparing two of them ran for hours beyond Ctrl-C's reach.
    Manifests of pods have no use for them (kubectl get never writes one)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise AliasInManifest("alias")
        return super().compose_node(parent, index)


_StringTimestampLoader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_pod(source: str, stdin: IO[str]) -> dict[str, Any]:
    """A pod from a JSON or YAML file (``-`` for stdin)."""
    text = read_source(source, stdin)
    name = "stdin" if source == "-" else source
    try:
        documents = [
            doc for doc in yaml.load_all(text, Loader=_StringTimestampLoader) if doc is not None
        ]
    except AliasInManifest as error:
        raise UsageError(
            f"{name} uses a YAML alias (*name), which check does not expand"
        ) from error
    except yaml.YAMLError as error:
        raise UsageError(f"{name} is neither JSON nor YAML") from error
    except RecursionError as error:
        raise UsageError(f"{name} nests too deeply") from error
    if len(documents) != 1:
        raise UsageError(f"{name} must hold exactly one object, found {len(documents)}")
    pod = documents[0]
    if not isinstance(pod, dict):
        raise UsageError(f"{name} must hold a Pod object, not a {type(pod).__name__}")
    _require_pod(pod, name)
    return pod


_KIND = re.compile(r"[A-Za-z][A-Za-z0-9]{0,62}")


def _require_pod(pod: dict[str, Any], name: str) -> None:
    """A manifest kubectl replace would send: kind Pod, apiVersion v1, a metadata.name.

    Messages name the field, never its value (a pod's fields can hold secrets); a kind
    is shown only when it looks like one.
    """
    kind = pod.get("kind")
    if kind is None:
        raise UsageError(f"{name} has no kind: a Pod manifest says kind: Pod (as kubectl needs)")
    if kind != "Pod":
        shown = f"a {kind}" if isinstance(kind, str) and _KIND.fullmatch(kind) else "another kind"
        raise UsageError(f"{name} holds {shown}, not a Pod")
    if pod.get("apiVersion") is None:
        raise UsageError(f"{name} has no apiVersion: a Pod manifest says apiVersion: v1")
    if pod.get("apiVersion") != "v1":
        raise UsageError(f"{name}: apiVersion is not v1, the only version of Pod")
    metadata = pod.get("metadata")
    if not isinstance(metadata, dict):
        raise UsageError(f"{name} has no metadata (a mapping with the pod's name)")
    pod_name = metadata.get("name")
    if pod_name is None or pod_name == "":
        raise UsageError(f"{name} has no metadata.name: a manifest names the pod it replaces")
    for key in ("name", "namespace", "uid"):
        if key in metadata and not isinstance(metadata[key], str):
            raise UsageError(f"{name}: metadata.{key} is not a string")


def require_same_pod(old: dict[str, Any], new: dict[str, Any]) -> None:
    """UsageError unless --old and --new are the same pod: a replacement keeps the
    namespace and name, and the uid when both name one. A namespace the manifest leaves
    out is the one kubectl would use, which an offline check does not know."""
    old_meta, new_meta = old["metadata"], new["metadata"]
    for key in ("namespace", "name", "uid"):
        if key in old_meta and key in new_meta and old_meta[key] != new_meta[key]:
            raise UsageError(
                f"--old and --new are different pods (their metadata.{key} differ): "
                "a replacement keeps the pod's namespace, name and uid"
            )


def fill_server_fields(live: dict[str, Any], manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest with the metadata the API server would take from the live pod."""
    filled = dict(manifest)
    metadata = dict(filled.get("metadata") or {})
    live_metadata = live.get("metadata") or {}
    for key in SERVER_FILLED_METADATA:
        if key not in metadata and key in live_metadata:
            metadata[key] = live_metadata[key]
    filled["metadata"] = metadata
    if "status" not in filled and "status" in live:
        filled["status"] = live["status"]
    return filled


# What an offline check cannot know, said in its output (README, "Will my kubectl
# replace be accepted?").
OFFLINE_CAVEAT = (
    "offline: judged the manifest as written. The API server fills in defaults for "
    "fields a manifest omits and applies its own pod validation (ValidatePodUpdate) "
    "before any webhook; an offline check knows neither. --live asks the API server."
)


UNKNOWN_MESSAGE = (
    "cannot tell offline: the only fields that differ are ones the manifest omits, which "
    "the API server may fill in with its defaults"
)


def _omitted(manifest: dict[str, Any], segments: tuple[str | int, ...]) -> bool:
    """True when the manifest leaves a spec path out (or empty) at some level.

    Only spec fields get API defaults; the metadata the API server fills in on update
    is taken from the old pod (:func:`fill_server_fields`), so an omitted label or
    finalizer is a real removal.
    """
    if not segments or segments[0] != "spec":
        return False
    node: Any = manifest
    for segment in segments:
        if isinstance(segment, int):
            if not isinstance(node, list) or segment >= len(node):
                return True
        elif not isinstance(node, dict) or segment not in node:
            return True
        node = node[segment]
    return node is None or node in ("", [], {})


def check(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Offline: the webhook's verdict (enforce mode) on replacing ``old`` with ``new``.

    A path the manifest omits is reported as such: the API server may default it
    (``imagePullPolicy``, ``dnsPolicy``, ...), which only ``--live`` can tell. When
    every violation is of that kind the verdict is "unknown", not "denied".
    """
    from webhook.policy import judge_update

    decision = judge_update(old, fill_server_fields(old, new))
    status = decision.response.get("status") or {}
    violations = [
        {"path": v.path, **({"omitted": True} if _omitted(new, v.segments) else {})}
        for v in decision.violations
    ]
    known = [v for v in violations if not v.get("omitted")]
    verdict = "allowed" if decision.allowed else ("denied" if known else "unknown")
    message = status.get("message", "pod update allowed")
    if verdict == "unknown":
        message = UNKNOWN_MESSAGE
    return {
        "allowed": None if verdict == "unknown" else decision.allowed,
        "verdict": verdict,
        "checked": "offline",
        "violations": violations,
        "message": message,
        "caveat": OFFLINE_CAVEAT,
    }


# How often check --live reads the pod again when a writer (the kubelet, a controller)
# changes it between the read and the dry run.
LIVE_ATTEMPTS = 5
# What the API server parses a resourceVersion with (strconv.ParseUint, base 10).
_RESOURCE_VERSION = re.compile(r"[0-9]{1,20}")


def named_version(metadata: dict[str, Any]) -> int | None:
    """The resourceVersion a manifest names, as the API server reads it. Absent, empty
    and any value that parses to 0 mean "replace the pod as it is now"."""
    value = metadata.get("resourceVersion")
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _RESOURCE_VERSION.fullmatch(value):
        raise UsageError("metadata.resourceVersion must be a string of digits")
    return int(value) or None


def _read_and_dry_run(
    cluster: Any, manifest: dict[str, Any], name: str, namespace: str
) -> tuple[dict[str, Any], Any]:
    """The live pod and the API server's answer to replacing exactly that version.

    As ``kubectl replace``: a manifest that names a resourceVersion replaces the pod
    only while it is at that version (else UsageError: the pod changed since the
    manifest was read, which is what kubectl would meet as a Conflict), and one that
    names a uid only that very pod (not one deleted and created again under its name).
    One that names no version replaces the current pod: it is pinned to the version
    just read, so the rules compare the stored object with exactly the pod it
    replaces, and a Conflict means the pod changed in between (the kubelet writes
    status at any time): read again.
    """
    from webhook.live import PodChanged

    metadata = manifest["metadata"]
    named = named_version(metadata)
    stale = (
        f"pod {namespace}/{name} has changed since the manifest was read (its "
        "metadata.resourceVersion is no longer the pod's): kubectl replace would fail "
        "with a Conflict; get the pod again and redo the change"
    )
    for _ in range(LIVE_ATTEMPTS):
        live = cluster.read_pod(name, namespace)
        live_metadata = live.get("metadata") or {}
        if metadata.get("uid") and metadata["uid"] != live_metadata.get("uid"):
            raise UsageError(
                f"pod {namespace}/{name} is not the pod the manifest was read from (its "
                "metadata.uid differs: the pod was deleted and created again): kubectl "
                "replace would fail with a Conflict"
            )
        read = int(live_metadata.get("resourceVersion") or 0)
        if named is not None and named < read:
            raise UsageError(stale)
        version = str(named if named is not None else read)
        pinned = {**manifest, "metadata": {**metadata, "resourceVersion": version}}
        try:
            answer = cluster.dry_run_replace(pinned, name, namespace)
        except PodChanged as error:
            if named is not None:
                raise UsageError(stale) from error
            continue
        # A manifest naming a version newer than the one read: read again.
        if named is None or named == read:
            return live, answer
    raise UsageError(
        f"pod {namespace}/{name} changed between reading it and the dry run on each of "
        f"{LIVE_ATTEMPTS} tries; try again"
    )


def check_live(
    manifest: dict[str, Any], kubeconfig: str | None, context: str | None
) -> dict[str, Any]:
    """Ask the API server: a dry-run replacement, then the replace rules on what it
    would store. Works whether or not the webhook is installed."""
    from webhook.live import WEBHOOK_NAME, Cluster, LiveError
    from webhook.policy import judge_update

    metadata = manifest.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise UsageError("metadata of the --new manifest must be a map")
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        raise UsageError("--live needs metadata.name in the --new manifest")
    if not is_object_name(name):
        raise UsageError("metadata.name of the --new manifest is not a valid pod name")
    try:
        cluster = Cluster(kubeconfig, context)
        namespace = metadata.get("namespace") or cluster.default_namespace
        if not isinstance(namespace, str) or not is_dns_label(namespace):
            raise UsageError("metadata.namespace of the --new manifest is not a valid namespace")
        live, answer = _read_and_dry_run(
            cluster, {**manifest, "metadata": metadata}, name, namespace
        )
    except LiveError as error:
        raise UsageError(str(error)) from error
    verdict: dict[str, Any] = {"checked": "live", "namespace": namespace, "name": name}
    if answer.stored is None:
        ours = answer.refused_by == "admission-webhook" and answer.refuser == WEBHOOK_NAME
        layer = "replace-rules" if ours else answer.refused_by
        return {
            **verdict,
            "allowed": False,
            "verdict": "denied",
            "layer": layer,
            "refuser": answer.refuser,
            "violations": [{"path": path} for path in answer.fields],
        }
    decision = judge_update(live, answer.stored)
    return {
        **verdict,
        "allowed": decision.allowed,
        "verdict": "allowed" if decision.allowed else "denied",
        "layer": "" if decision.allowed else "replace-rules",
        "refuser": "",
        "violations": [{"path": path} for path in decision.violation_paths],
    }


_LAYERS = {
    "api-server": "the API server's own pod validation (it runs before any webhook)",
    "replace-rules": "the replace rules",
    "admission-webhook": "another admission webhook",
    "admission-policy": "a ValidatingAdmissionPolicy",
}


def _print_verdict(verdict: dict[str, Any], output: str, out: IO[str]) -> None:
    if output != "text":
        write_structured(verdict, output, out)
        return
    live = verdict["checked"] == "live"
    if verdict["verdict"] == "allowed":
        if live:
            out.write("allowed: the API server accepts it and only updatable fields change\n")
        else:
            out.write("allowed: the update changes only fields that may be updated\n")
    else:
        if live:
            refuser = f" ({verdict['refuser']})" if verdict.get("refuser") else ""
            out.write(f"denied by {_LAYERS[verdict['layer']]}{refuser}")
            out.write(", naming these fields:\n" if verdict["violations"] else "\n")
        elif verdict["verdict"] == "unknown":
            out.write("unknown: only fields the manifest omits differ:\n")
        else:
            out.write("denied: these fields may not be changed:\n")
        for violation in verdict["violations"]:
            note = " (omitted in the manifest: the API server may default it)"
            out.write(f"  {violation['path']}{note if violation.get('omitted') else ''}\n")
        if verdict["verdict"] == "unknown":
            out.write(verdict["message"] + "\n")
        elif not live:
            out.write(verdict["message"].split(". ", 1)[-1] + "\n")
    if not live:
        out.write(verdict["caveat"] + "\n")


EXIT_BY_VERDICT = {"allowed": EXIT_ALLOWED, "denied": EXIT_DENIED, "unknown": EXIT_UNKNOWN}


def _cmd_check(args: argparse.Namespace, stdin: IO[str], out: IO[str]) -> int:
    if args.live and args.old:
        raise UsageError("--live reads the old object from the cluster; do not also pass --old")
    if not args.live:
        refuse_unused(args, "applies only with --live", "--kubeconfig", "--context")
    if not args.live and not args.old:
        raise UsageError("--old is required (or --live to ask the cluster)")
    if args.old == "-" and args.new == "-":
        raise UsageError("only one of --old and --new can be stdin")
    new = load_pod(args.new, stdin)
    try:
        if args.live:
            verdict = check_live(new, args.kubeconfig, args.context)
        else:
            old = load_pod(args.old, stdin)
            require_same_pod(old, new)
            verdict = check(old, new)
    except MalformedReview as error:
        raise UsageError(error.reason) from error
    _print_verdict(verdict, args.output, out)
    return EXIT_BY_VERDICT[verdict["verdict"]]


def _cmd_certs(args: argparse.Namespace, out: IO[str]) -> int:
    from webhook.certs import CertificateError, write_certificates

    try:
        issued = write_certificates(
            args.out,
            args.service,
            args.namespace,
            args.host,
            args.ip,
            new_ca=args.new_ca,
            days=args.days,
        )
    except CertificateError as error:
        raise UsageError(str(error)) from error
    except OSError as error:
        raise UsageError(f"cannot write to {args.out}: {error.strerror}") from error
    if args.output == "text":
        out.write(issued.ca_bundle + "\n")
    else:
        result = {"caBundle": issued.ca_bundle, "dir": str(issued.out_dir)}
        write_structured({**result, "reusedCA": issued.reused_ca}, args.output, out)
    return EXIT_OK


def _cmd_client_cert(args: argparse.Namespace, out: IO[str]) -> int:
    from webhook.certs import CertificateError, write_client_certificate

    try:
        ca_path = write_client_certificate(args.out, args.name, days=args.days)
    except (CertificateError, ValueError) as error:
        raise UsageError(str(error)) from error
    except OSError as error:
        raise UsageError(f"cannot write to {args.out}: {error.strerror}") from error
    if args.output == "text":
        out.write(f"{ca_path}\n")
    else:
        write_structured({"clientCA": str(ca_path)}, args.output, out)
    return EXIT_OK


def _cmd_serve(args: argparse.Namespace) -> int:
    from webhook.logs import configure_logging

    settings = load_settings(
        config_file=args.config,
        overrides={
            "bind": args.bind,
            "cert_dir": args.cert_dir,
            "client_ca": args.client_ca,
            "mode": args.mode,
            "workers": args.workers,
            "threads": args.threads,
            "tls_min_version": args.tls_min_version,
        },
    )
    configure_logging(settings.log_level)
    log = logging.getLogger("pod_replace_guard.cli")
    for caution in cautions(settings):
        log.warning(caution, extra={"event": "config-caution"})
    from webhook.certs import has_serving_certificate, write_certificates

    if not has_serving_certificate(settings.cert_dir):
        try:
            issued = write_certificates(settings.cert_dir, "pod-replace-guard", settings.namespace)
        except OSError as error:
            raise UsageError(
                f"no tls.crt/tls.key in {settings.cert_dir} and cannot write development "
                f"certificates there: {error.strerror}"
            ) from error
        log.info(
            "no certificate found: generated a development CA and serving certificate",
            extra={"event": "dev-certificates", "cert_dir": str(issued.out_dir)},
        )
    from webhook.gunicorn_app import prepare_metrics_dir, run_gunicorn

    prepare_metrics_dir()

    log.info(
        "starting pod-replace-guard",
        extra={
            "event": "start",
            "bind": settings.bind,
            "mode": settings.mode,
            "workers": settings.workers,
        },
    )
    master = os.getpid()
    try:
        run_gunicorn(settings)
    except SystemExit as stop:
        # gunicorn ends its master with sys.exit: 0 after draining, else 1 (cannot bind),
        # 3 (a worker cannot boot), 4 (the app cannot load) or -1. A forked worker's
        # exit is gunicorn's business (the master reads it): pass it on untouched.
        if os.getpid() != master or stop.code in (0, None):
            raise
        raise UsageError(
            f"the server stopped: gunicorn exit status {stop.code} (its log says why)"
        ) from None
    return EXIT_OK


def _cmd_controller(args: argparse.Namespace) -> int:
    import signal
    import threading
    import time

    from webhook.controller import Controller, ControllerError, KubeCluster, sync_until_certificates
    from webhook.live import LiveError, kube_api_client, transport_errors
    from webhook.logs import configure_logging

    settings = load_settings(config_file=args.config)
    configure_logging(settings.log_level)
    # urllib3 logs each retry of a refused connection (three a sync): the controller
    # says once what failed, and --once says it in its one line.
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    kubeconfig = args.kubeconfig or os.environ.get("KUBECONFIG")
    try:
        if kubeconfig:
            api = kube_api_client(kubeconfig, None)
        else:
            try:
                from kubernetes import client, config
            except ImportError as error:
                raise UsageError(
                    "controller needs the kubernetes client: pip install 'pod-replace-guard[live]'"
                ) from error
            config.load_incluster_config()  # type: ignore[no-untyped-call]
            api = client.ApiClient()
        controller = Controller(settings, KubeCluster(api))
    except (LiveError, ControllerError) as error:
        raise UsageError(str(error)) from error
    except UsageError:
        raise
    except Exception as error:  # the client's in-cluster loader raises its own types
        raise UsageError(f"cannot reach the API server: {error}") from error
    errors = transport_errors()
    if args.once:
        why = sync_until_certificates(controller, errors, time.monotonic() + args.timeout)
        if why:
            raise UsageError(f"certificates not ready after {args.timeout:g} s: {why}")
        return EXIT_OK
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    controller.run(stop, errors)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Kubernetes admission webhook for the pod replace rules.",
        epilog="Exit codes: README.md, 'Exit codes'. Errors are one line on stderr, exit 2.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {version()}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = commands.add_parser("serve", help="serve the webhook with gunicorn over TLS")
    serve.add_argument("--bind", help="HOST:PORT (default 0.0.0.0:8443, PRG_BIND)")
    serve.add_argument(
        "--cert-dir", help="directory with tls.crt and tls.key (generated if absent)"
    )
    serve.add_argument("--client-ca", help="require client certificates signed by this CA file")
    serve.add_argument("--config", help="YAML settings file (PRG_CONFIG)")
    serve.add_argument("--mode", help="enforce, warn or audit (PRG_MODE)")
    serve.add_argument("--workers", help="gunicorn worker processes (PRG_WORKERS)")
    serve.add_argument("--threads", help="threads per worker (PRG_THREADS)")
    serve.add_argument("--tls-min-version", help="1.2 or 1.3 (PRG_TLS_MIN_VERSION)")

    check_cmd = commands.add_parser(
        "check",
        help="judge replacing OLD with NEW (enforce mode): offline, or --live with the API server",
    )
    check_cmd.add_argument("--old", help="the current pod (JSON or YAML file, - for stdin)")
    check_cmd.add_argument(
        "--new", required=True, help="the replacement (JSON or YAML file, - for stdin)"
    )
    check_cmd.add_argument(
        "--live",
        action="store_true",
        help="ask the cluster: a server-side dry-run replacement, judged against the live pod",
    )
    check_cmd.add_argument(
        "--kubeconfig", help="kubeconfig for --live (default: $KUBECONFIG, ~/.kube/config)"
    )
    check_cmd.add_argument("--context", help="kubeconfig context for --live")
    check_cmd.add_argument(
        "--output", "-o", choices=OUTPUTS, default="text", help="text (default), json or yaml"
    )

    certs = commands.add_parser(
        "certs", help="write a CA and a serving certificate; print the caBundle"
    )
    certs.add_argument("--out", required=True, help="output directory")
    certs.add_argument(
        "--service", required=True, type=dns_label("--service"), help="the webhook's Service name"
    )
    certs.add_argument(
        "--namespace", required=True, type=dns_label("--namespace"), help="the webhook's namespace"
    )
    certs.add_argument(
        "--host", action="append", default=[], type=dns_name, help="an extra DNS name (repeatable)"
    )
    certs.add_argument("--ip", action="append", default=[], help="an extra IP address (repeatable)")
    certs.add_argument("--new-ca", action="store_true", help="replace the CA instead of reusing it")
    certs.add_argument(
        "--days",
        type=positive_days,
        default=365,
        help="serving certificate validity (days, more than 0, may be a fraction)",
    )
    certs.add_argument(
        "--output",
        "-o",
        choices=OUTPUTS,
        default="text",
        help="text: the caBundle (default); json or yaml: caBundle, dir, reusedCA",
    )

    client = commands.add_parser(
        "client-cert",
        help="write a client CA and a client certificate for the API server; print the CA's path",
    )
    client.add_argument("--out", required=True, help="output directory")
    client.add_argument(
        "--name",
        default="kube-apiserver",
        type=common_name,
        help="the certificate's common name",
    )
    client.add_argument(
        "--days", type=positive_days, default=365, help="validity (days, more than 0)"
    )
    client.add_argument(
        "--output",
        "-o",
        choices=OUTPUTS,
        default="text",
        help="text: the client CA's path (default); json or yaml: clientCA",
    )

    controller = commands.add_parser(
        "controller",
        help="keep the certificates renewed and the webhook configuration registered",
    )
    controller.add_argument("--config", help="YAML settings file (PRG_CONFIG)")
    controller.add_argument(
        "--kubeconfig", help="a kubeconfig (default: KUBECONFIG, else the pod's service account)"
    )
    controller.add_argument(
        "--once",
        action="store_true",
        help="make sure the certificate files exist, then exit (an init container)",
    )
    controller.add_argument(
        "--timeout",
        type=positive_seconds,
        default=120.0,
        help="with --once: give up after SECONDS (more than 0)",
    )

    policy_command.add_parser(commands)
    return parser


def _run(args: argparse.Namespace, stdin: IO[str], out: IO[str]) -> int:
    if args.command == "check":
        return _cmd_check(args, stdin, out)
    if args.command == "certs":
        return _cmd_certs(args, out)
    if args.command == "client-cert":
        return _cmd_client_cert(args, out)
    if args.command == "policy":
        return policy_command.run_policy(args, stdin, out)
    if args.command == "controller":
        return _cmd_controller(args)
    return _cmd_serve(args)


def _error(message: str) -> None:
    """The one line of every failure that is not a verdict (stderr may be closed too)."""
    try:
        sys.stderr.write(f"{PROG}: error: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _silence_stdout() -> None:
    """After a reader closed the pipe: point stdout at /dev/null, so the interpreter's
    final flush does not report the same broken pipe again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _where(error: BaseException) -> str:
    """File and line an unexpected exception came from: enough to report the bug,
    nothing of the data (a pod's fields can hold secrets)."""
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return ""
    frame = frames[-1]
    return f" at {os.path.basename(frame.filename)}:{frame.lineno}"


def main(
    argv: Sequence[str] | None = None, stdin: IO[str] | None = None, out: IO[str] | None = None
) -> int:
    """The command line. Exit codes: README.md, "Exit codes"; every failure that is not
    a verdict is one line on stderr and exit 2, never a traceback."""
    stdin = stdin or sys.stdin
    out = out or sys.stdout
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as stop:  # --help, --version
            sys.stdout.flush()
            return int(stop.code or 0)
        code = _run(args, stdin, out)
        out.flush()
        return code
    except (UsageError, ConfigError) as error:
        _error(str(error))
        return EXIT_ERROR
    except BrokenPipeError:
        # The reader went away (policy | head): like cat or kubectl, say nothing, but
        # do not claim success either: the output was cut short.
        if out is sys.stdout:
            _silence_stdout()
        return EXIT_ERROR
    except KeyboardInterrupt:
        _error("interrupted")
        return EXIT_INTERRUPTED
    except RecursionError:
        _error("the input nests too deeply")
        return EXIT_ERROR
    except OSError as error:
        # Writing the answer failed (a full disk, /dev/full): no bug, and no verdict
        # either. Stdout is silenced so that its final flush adds nothing.
        if out is sys.stdout:
            _silence_stdout()
        _error(f"input/output error: {error.strerror or type(error).__name__}")
        return EXIT_ERROR
    except Exception as error:
        _error(f"unexpected {type(error).__name__}{_where(error)}: a bug, please report it")
        return EXIT_ERROR
