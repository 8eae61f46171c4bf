"""The I/O of ``pod-replace-guard policy``: schema and settings in, YAML out.

The generation itself is :mod:`webhook.admission_policy` (pure). This module reads the
schema (the packaged one, a file, or a live cluster's ``/openapi/v3/api/v1``), the
settings, and for ``--check`` the installed policy; every bad input is a UsageError
(one line on stderr, exit 2).
"""

from __future__ import annotations

import argparse
import json
from importlib import resources
from typing import IO, Any

import yaml

from webhook.admission_policy import (
    PER_CALL_LIMIT,
    POLICY_NAME,
    RUNTIME_COST_BUDGET,
    VARIANT_POSITIONS,
    VARIANTS,
    SchemaError,
    VersionError,
    generate,
    installed_variant,
    uncovered_fields,
    variant_for,
    variant_runs_on,
)
from webhook.cli_support import (
    OUTPUTS,
    UsageError,
    dump_yaml,
    object_name,
    read_source,
    refuse_unused,
    write_structured,
)
from webhook.settings import ConfigError, load_settings

DEFAULT_SCHEMA_VERSION = "v1.34.4"
DEFAULT_SCHEMA = f"pod-{DEFAULT_SCHEMA_VERSION}.json"
OPENAPI_PATH = "/openapi/v3/api/v1"
EXIT_COVERED, EXIT_UNCOVERED = 0, 1


def packaged_schema() -> dict[str, Any]:
    """The trimmed pod schema of the pinned Kubernetes version (package data)."""
    text = resources.files("webhook").joinpath("schemas", DEFAULT_SCHEMA).read_text("utf-8")
    document: dict[str, Any] = json.loads(text)
    return document


def _read_json(path: str, what: str) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror}") from error
    except (UnicodeDecodeError, ValueError) as error:
        raise UsageError(f"{path} is not {what} (JSON)") from error
    except RecursionError as error:
        raise UsageError(f"{path} nests too deeply") from error


def _api_client(kubeconfig: str | None, context: str | None) -> Any:
    from webhook.live import LiveError, kube_api_client

    try:
        return kube_api_client(kubeconfig, context)
    except LiveError as error:
        raise UsageError(str(error)) from error


def _get_json(api: Any, path: str, what: str) -> Any:
    from kubernetes.client.exceptions import ApiException

    from webhook.live import (
        SCHEMA_SECONDS,
        LiveError,
        host_of,
        time_limit,
        transport_errors,
        unreachable,
    )

    try:
        with time_limit(SCHEMA_SECONDS, f"reading {what}"):
            return _get_json_unlimited(api, path)
    except LiveError as error:
        raise UsageError(str(error)) from error
    except ApiException as error:
        if not error.status:  # the client's own: TLS failed, ...
            raise UsageError(str(unreachable(error, host_of(api)))) from error
        raise UsageError(f"cannot read {what}: {error.status} {error.reason}") from error
    except transport_errors() as error:
        raise UsageError(str(unreachable(error, host_of(api)))) from error


def _get_json_unlimited(api: Any, path: str) -> Any:
    from kubernetes.client.exceptions import ApiException

    from webhook.live import SCHEMA_SECONDS

    if hasattr(api, "param_serialize"):  # kubernetes >= 33 (openapi-generator 7)
        method, url, headers, body, post = api.param_serialize(
            "GET", path, header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )  # fmt: skip
        response = api.call_api(method, url, headers, body, post, _request_timeout=SCHEMA_SECONDS)
        response.read()
        if not 200 <= response.status < 300:
            raise ApiException(status=response.status, reason=response.reason)
    else:
        response = api.call_api(
            path, "GET", auth_settings=["BearerToken"], response_type=None,
            _preload_content=False, _return_http_data_only=True,
            _request_timeout=SCHEMA_SECONDS,
        )  # fmt: skip
    return json.loads(response.data)


def _read_policy(path: str, stdin: IO[str]) -> dict[str, Any]:
    """The ValidatingAdmissionPolicy in a YAML or JSON file (- for stdin)."""
    text = read_source(path, stdin)
    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError as error:
        raise UsageError(f"{'stdin' if path == '-' else path} is neither JSON nor YAML") from error
    except RecursionError as error:
        raise UsageError(f"{'stdin' if path == '-' else path} nests too deeply") from error
    for document in documents:
        if isinstance(document, dict) and document.get("kind") == "ValidatingAdmissionPolicy":
            return document
    raise UsageError(f"{'stdin' if path == '-' else path} holds no ValidatingAdmissionPolicy")


def _live_version(api: Any) -> str:
    version = _get_json(api, "/version", "the server version")
    return str(version.get("gitVersion", "")) if isinstance(version, dict) else ""


def _settings(args: argparse.Namespace) -> Any:
    """Settings as ``serve`` reads them (PRG_* environment, --config), or from an env
    file such as deploy/base/settings.env instead of the environment."""
    environ: dict[str, str] | None = None
    if args.settings_env:
        environ = {}
        try:
            with open(args.settings_env, encoding="utf-8") as handle:
                lines = handle.read().splitlines()
        except OSError as error:
            raise UsageError(f"cannot read {args.settings_env}: {error.strerror}") from error
        except UnicodeDecodeError as error:
            raise UsageError(f"{args.settings_env} is not UTF-8 text") from error
        for number, line in enumerate(lines, start=1):
            text = line.strip()
            if text and not text.startswith("#"):
                key, sep, value = text.partition("=")
                if not sep:
                    # The line itself is not shown: an env file can hold secrets.
                    raise UsageError(f"{args.settings_env}: line {number} is not KEY=VALUE")
                environ[key.strip()] = value.strip()
    try:
        return load_settings(
            environ=environ, config_file=args.config, overrides={"mode": args.mode}
        )
    except ConfigError as error:
        raise UsageError(str(error)) from error


def _header(source: str, version: str, groups: list[str], variant: str, chosen_by: str) -> str:
    how = (
        "lists are walked with two-variable\n# comprehensions (transformList)."
        if variant != VARIANT_POSITIONS
        else "lists are walked by positions made of\n# variables.digits (the API server "
        "offers no two-variable comprehensions before 1.33;\n# for 1.33 and later "
        "`--kube-version` makes the faster variant)."
    )
    return (
        "# Generated by `pod-replace-guard policy` from webhook/rules.py and the pod schema of\n"
        f"# {source}{f' (Kubernetes {version})' if version else ''}. Do not edit: regenerate.\n"
        f"# Variant for API servers {variant}\n# ({chosen_by}): {how}\n"
        "#\n"
        "# Fields the schema does not know are compared only beneath a field compared whole\n"
        "# (the webhook freezes them all);\n"
        "# `pod-replace-guard policy --check --live` reports fields a cluster's schema adds.\n"
        f"# CEL cost: each of the {len(groups)} changed* variables is its own program (the API\n"
        f"# server's limit: {PER_CALL_LIMIT:,} per program, {RUNTIME_COST_BUDGET:,} per binding).\n"
        "# Frozen subtrees are compared whole, one equality each; containers, init containers\n"
        "# and volumes are matched item by item only when the list differs. Labels and\n"
        "# annotations are never read. Measured (tests/e2e/controlplane/tools/celcost): ~310\n"
        "# for an update that changes no list (3 containers, 10 volumes), +~130 per container\n"
        "# whose image changes (v1.30+ variant: ~210), so changing the images of ~7,500\n"
        "# containers in one update (v1.30+: ~4,800) passes the limit: refused (failurePolicy\n"
        '# Fail), never let through. See README, "Webhook or policy?", docs/benchmarks.md.\n'
    )


def run_policy(args: argparse.Namespace, stdin: IO[str], out: IO[str]) -> int:
    """``policy``: print the policy and binding, or ``--check`` an installed one."""
    if not args.live:
        refuse_unused(args, "applies only with --live", "--kubeconfig", "--context")
    elif args.schema:
        raise UsageError("--live reads the schema from the cluster; do not also pass --schema")
    elif args.kube_version:
        raise UsageError(
            "--live reads the version from the cluster; --kube-version is for offline use"
        )
    if args.check:
        refuse_unused(
            args,
            "does not apply to --check (it compares the fields, not the settings)",
            "--config",
            "--settings-env",
            "--mode",
            "--kube-version",
        )
        if not args.policy and not args.live:
            raise UsageError("--check needs --live (or --policy FILE for the installed policy)")
        output = args.output or "text"
        settings = None
    else:
        refuse_unused(args, "applies only with --check", "--policy")
        output = args.output or "yaml"
        if output == "text":
            raise UsageError("-o text applies only with --check; the policy prints as yaml or json")
        settings = _settings(args)  # a bad setting is found before the cluster is asked
        if args.kube_version:
            _variant(args.kube_version, "--kube-version")  # a bad version, before the cluster
    api = _api_client(args.kubeconfig, args.context) if args.live else None
    version = ""
    if api is not None:
        document = _get_json(api, OPENAPI_PATH, f"{OPENAPI_PATH}")
        version = _live_version(api)
        source = f"the cluster's {OPENAPI_PATH}"
    elif args.schema:
        document = _read_json(args.schema, "an OpenAPI v3 document")
        source = args.schema
    else:
        document = packaged_schema()
        version = DEFAULT_SCHEMA_VERSION
        source = f"webhook/schemas/{DEFAULT_SCHEMA}"
    if settings is None:
        return _check(args, api, (document, source, version), output, stdin, out)
    variant, chosen_by = _choose_variant(args.kube_version, api is not None, version)
    try:
        generated = generate(
            document, settings, schema_version=version, name=args.name, variant=variant
        )
    except SchemaError as error:
        raise UsageError(f"{source}: {error}") from error
    if output == "json":
        out.write(json.dumps({"kind": "List", "apiVersion": "v1", "items": generated.documents()}))
        out.write("\n")
        return EXIT_COVERED
    out.write(_header(source, version, generated.groups, variant, chosen_by))
    out.write(dump_yaml(generated.documents()))
    return EXIT_COVERED


def _choose_variant(kube_version: str | None, live: bool, version: str) -> tuple[str, str]:
    """(the policy variant, what chose it): --kube-version, else the cluster's version
    (--live), else the schema's (the packaged one), else the newest variant."""
    if kube_version:
        return _variant(kube_version, "--kube-version"), "--kube-version"
    if live:
        return _variant(version, "the cluster's version"), "the cluster's version"
    if version:
        return _variant(version, "the schema's version"), "the schema's version"
    return next(iter(VARIANTS)), "the newest; --kube-version to choose"


def _variant(version: str, what: str) -> str:
    """The policy variant for a Kubernetes version, or a UsageError naming ``what``."""
    try:
        return variant_for(version)
    except VersionError as error:
        raise UsageError(f"{what}: {error}") from error


def _check(
    args: argparse.Namespace,
    api: Any,
    schema: tuple[Any, str, str],
    output: str,
    stdin: IO[str],
    out: IO[str],
) -> int:
    """Exit 1 if the installed policy misses a field of the schema, or (--live) is a
    variant whose CEL the cluster's version does not compile."""
    document, source, version = schema
    if args.policy:
        installed = _read_policy(args.policy, stdin)
    else:
        path = f"/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies/{args.name}"
        installed = _get_json(api, path, f"ValidatingAdmissionPolicy {args.name}")
        if not isinstance(installed, dict):
            raise UsageError(f"the cluster's ValidatingAdmissionPolicy {args.name} is no object")
    try:
        missing = uncovered_fields(document, installed)
        variant = installed_variant(installed)
    except SchemaError as error:
        raise UsageError(str(error)) from error
    best = _variant(version, "the cluster's version") if api is not None else ""
    runs = not best or variant_runs_on(variant, version)
    code = EXIT_UNCOVERED if missing or not runs else EXIT_COVERED
    if output != "text":
        result: dict[str, Any] = {
            "covered": not missing,
            "schema": source,
            "missing": missing,
            "variant": variant,
        }
        if best:
            result.update(kubernetesVersion=version, variantRuns=runs, bestVariant=best)
        write_structured(result, output, out)
        return code
    if not missing:
        out.write("covered: the policy compares every field of the schema it could\n")
    else:
        out.write(f"NOT covered: {len(missing)} fields of this schema are not in the policy:\n")
        for name in missing:
            out.write(f"  {name}\n")
    if not runs:
        out.write(
            f"NOT for this cluster: the policy is the {variant} variant; Kubernetes "
            f"{version} compiles the {best} variant\n"
        )
    elif best and best != variant:
        out.write(f"the {variant} variant runs here; the {best} variant would be faster\n")
    if missing or not runs:
        out.write("regenerate it: pod-replace-guard policy --live | kubectl apply -f -\n")
    return code


def add_parser(commands: Any) -> None:
    """The ``policy`` subcommand's arguments."""
    policy = commands.add_parser(
        "policy",
        help="print a ValidatingAdmissionPolicy + binding generated from the rules and a "
        "pod schema; --check reports fields an installed one does not cover",
    )
    policy.add_argument(
        "--schema",
        help=f"an OpenAPI v3 document with the Pod (default: the packaged {DEFAULT_SCHEMA})",
    )
    policy.add_argument(
        "--live", action="store_true", help=f"read the schema from the cluster's {OPENAPI_PATH}"
    )
    policy.add_argument("--kubeconfig", help="kubeconfig for --live")
    policy.add_argument("--context", help="kubeconfig context for --live")
    policy.add_argument(
        "--kube-version",
        help="the API server's Kubernetes version (e.g. 1.30): picks the policy variant its "
        f"CEL compiles ({', '.join(VARIANTS)}); default: the schema's, or with --live the "
        "cluster's",
    )
    policy.add_argument("--config", help="YAML settings file (exempt users, groups, namespaces)")
    policy.add_argument(
        "--settings-env", help="settings as KEY=VALUE lines (e.g. deploy/base/settings.env)"
    )
    policy.add_argument("--mode", help="enforce (Deny), warn (Warn) or audit (Audit)")
    policy.add_argument(
        "--name", default=POLICY_NAME, type=object_name, help="policy and binding name"
    )
    policy.add_argument(
        "--check",
        action="store_true",
        help="exit 1 if the installed policy does not cover every field of the schema, or "
        "(--live) is a variant whose CEL the cluster's version does not compile",
    )
    policy.add_argument("--policy", help="with --check: the installed policy from a file")
    policy.add_argument(
        "--output",
        "-o",
        choices=OUTPUTS,
        help="yaml (default) or json; with --check: text (default), json or yaml",
    )
