"""What every subcommand shares: exit codes, the one error path, input checks, output.

Kept apart from :mod:`webhook.cli` (the parser and the commands) so that
:mod:`webhook.policy_command` can use it without importing the CLI back.
"""

from __future__ import annotations

import argparse
import json
import re
from importlib import metadata
from pathlib import Path
from typing import IO, Any, Final

import yaml

PROG: Final = "pod-replace-guard"
DISTRIBUTION: Final = "pod-replace-guard"

# The exit codes, per command in README.md ("Exit codes"); tests/cli holds the table to
# what the commands do.
EXIT_OK: Final = 0  # allowed / printed / covered / written
EXIT_NO: Final = 1  # check: denied; policy --check: a field is not covered
EXIT_ERROR: Final = 2  # no verdict: bad flag or file, the cluster did not answer, ...
EXIT_UNKNOWN: Final = 3  # check offline: cannot tell
EXIT_INTERRUPTED: Final = 130  # Ctrl-C (128 + SIGINT, as a shell reports it)

OUTPUTS: Final = ("text", "json", "yaml")


class UsageError(Exception):
    """No verdict: reported as one line on stderr (``pod-replace-guard: error: ...``),
    exit code 2. Messages name flags, files and field paths, never pod field values."""


def version() -> str:
    """The installed distribution's version, or pyproject.toml's in a source tree."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        pass
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    try:
        import tomllib

        with pyproject.open("rb") as handle:
            return str(tomllib.load(handle)["project"]["version"])
    except (OSError, KeyError, ValueError):
        from webhook import __version__

        return __version__


def read_source(source: str, stdin: IO[str]) -> str:
    """A file's text (``-`` for stdin); UsageError naming the file otherwise."""
    if source == "-":
        try:
            return stdin.read()
        except UnicodeDecodeError as error:
            raise UsageError("stdin is not UTF-8 text") from error
    try:
        with open(source, encoding="utf-8") as handle:
            return handle.read()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise UsageError(f"cannot read {source}: {reason}") from error
    except UnicodeDecodeError as error:
        raise UsageError(f"{source} is not UTF-8 text") from error


# --- values of flags -----------------------------------------------------------------------------

# RFC 1123 label, as Kubernetes validates a Service's or a namespace's name.
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN = re.compile(rf"(\*\.)?{_LABEL}(\.{_LABEL})*")
# A serving or client certificate outliving the CA that signs it (3650 days) is no use.
MAX_DAYS: Final = 3650


def _shown(value: str) -> str:
    """A flag's value for a one-line message: quoted, escaped, shortened."""
    text = repr(value)
    return text if len(text) <= 70 else text[:60] + "...'"


def is_dns_label(value: str) -> bool:
    """A DNS-1123 label: a Service's or a namespace's name."""
    return len(value) <= 63 and bool(_DNS_LABEL.fullmatch(value))


def is_object_name(value: str) -> bool:
    """A Kubernetes object name: a DNS-1123 subdomain, no wildcard."""
    return len(value) <= 253 and not value.startswith("*") and bool(_DNS_SUBDOMAIN.fullmatch(value))


def dns_label(flag: str) -> Any:
    """An argparse type: a DNS-1123 label (a Service's or a namespace's name)."""

    def parse(value: str) -> str:
        if not is_dns_label(value):
            raise argparse.ArgumentTypeError(
                f"{_shown(value)} is not a DNS-1123 label (at most 63 lowercase letters, "
                "digits and '-', starting and ending with a letter or digit)"
            )
        return value

    parse.__name__ = flag
    return parse


def dns_name(value: str) -> str:
    """An argparse type: a DNS-1123 subdomain, optionally a ``*.`` wildcard (a SAN)."""
    if len(value) > 253 or not _DNS_SUBDOMAIN.fullmatch(value):
        raise argparse.ArgumentTypeError(
            f"{_shown(value)} is not a DNS name (lowercase labels of letters, digits and "
            "'-', separated by dots)"
        )
    return value


def object_name(value: str) -> str:
    """An argparse type: a Kubernetes object name (a DNS-1123 subdomain)."""
    if not is_object_name(value):
        raise argparse.ArgumentTypeError(
            f"{_shown(value)} is not an object name (a DNS-1123 subdomain)"
        )
    return value


# A certificate of less than a minute is spent before anything can use it (the suites
# make ones of 75 s to watch rotation).
MIN_DAYS: Final = 1 / 1440
_DECIMAL = re.compile(r"[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?")


def positive_days(value: str) -> float:
    """An argparse type: a validity in days (a plain decimal number), at least a minute
    and at most MAX_DAYS."""
    if not _DECIMAL.fullmatch(value):
        raise argparse.ArgumentTypeError(f"{_shown(value)} is not a number of days")
    days = float(value)
    if days < MIN_DAYS or days > MAX_DAYS:
        raise argparse.ArgumentTypeError(
            f"{_shown(value)}: must be at least a minute ({MIN_DAYS:.6f}) and at most "
            f"{MAX_DAYS} (the CA's validity)"
        )
    return days


# --timeout of `controller --once`: a day is far more than any init container waits.
MAX_TIMEOUT_SECONDS: Final = 86400.0


def positive_seconds(value: str) -> float:
    """An argparse type: seconds, a plain decimal number more than 0 (not nan or inf:
    a deadline of nan is never reached)."""
    if not _DECIMAL.fullmatch(value):
        raise argparse.ArgumentTypeError(f"{_shown(value)} is not a number of seconds")
    seconds = float(value)
    if not 0 < seconds <= MAX_TIMEOUT_SECONDS:
        raise argparse.ArgumentTypeError(
            f"{_shown(value)}: must be more than 0 and at most {MAX_TIMEOUT_SECONDS:g} seconds"
        )
    return seconds


def common_name(value: str) -> str:
    """An argparse type: a certificate's common name (1 to 64 printable characters)."""
    if not 1 <= len(value) <= 64 or not value.isprintable():
        raise argparse.ArgumentTypeError(
            f"{_shown(value)} is not a common name (1 to 64 printable characters)"
        )
    return value


def refuse_unused(args: argparse.Namespace, why: str, *flags: str) -> None:
    """UsageError when one of ``flags`` was given although ``why`` says it does not apply."""
    for flag in flags:
        if getattr(args, flag.lstrip("-").replace("-", "_")) not in (None, False, []):
            raise UsageError(f"{flag} {why}")


# --- output --------------------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    """YAML with long or multi-line strings as literal blocks (CEL reads as written)."""


def _represent_str(dumper: yaml.SafeDumper, text: str) -> yaml.Node:
    style = "|" if "\n" in text or len(text) > 60 else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _represent_str)


def dump_yaml(documents: list[Any]) -> str:
    """Documents as YAML, keys in their order."""
    return yaml.dump_all(documents, Dumper=_Dumper, sort_keys=False, width=100)


def write_structured(value: Any, output: str, out: IO[str]) -> None:
    """One object as ``-o json`` (a single line) or ``-o yaml``."""
    if output == "json":
        out.write(json.dumps(value) + "\n")
    else:
        out.write(dump_yaml([value]))
