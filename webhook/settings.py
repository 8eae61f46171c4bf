"""Configuration: read once at start-up from a YAML file and ``PRG_*`` variables.

Precedence, lowest first: defaults, the YAML file (``PRG_CONFIG`` or ``--config``),
environment variables, command-line flags. Every value is validated; a bad one stops
start-up with :class:`ConfigError` naming the key. Nothing here runs at import time.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, TypeVar
from urllib.parse import urlsplit

import yaml

ENV_PREFIX: Final = "PRG_"
Mode = Literal["enforce", "warn", "audit"]
MODES: Final[tuple[Mode, ...]] = ("enforce", "warn", "audit")
LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR")
# Pod subresources that change spec fields through their own APIs. Not judged by
# default: `kubectl debug` adds ephemeral containers and in-place resize changes
# resources, both by design of those APIs, not of the replace API.
JUDGEABLE_SUBRESOURCES: Final = ("ephemeralcontainers", "resize")
TLS_VERSIONS: Final = ("1.2", "1.3")
# The API server's webhook client closes connections idle this long (Go's
# http.Transport IdleConnTimeout, set by client-go's transport defaults).
API_SERVER_IDLE_TIMEOUT_SECONDS: Final = 90
# prometheus_client's multiprocess directory (gunicorn's workers share it).
MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key."""


@dataclass(frozen=True)
class Settings:
    """Everything configurable. Field docs are the README's configuration table."""

    # Decision
    mode: Mode = "enforce"
    # The identities of the built-in controllers that change pods' ownerReferences or
    # finalizers (adoption and release, garbage collection, the job controller's
    # tracking finalizer): their service accounts under kube-controller-manager's
    # --use-service-account-credentials, and its own identity without it. Not the whole
    # group system:serviceaccounts:kube-system, which also holds every CNI, CSI and
    # cloud agent installed there (tests/e2e/test_workloads.py shows these suffice).
    exempt_users: tuple[str, ...] = (
        "system:kube-controller-manager",
        "system:serviceaccount:kube-system:daemon-set-controller",
        "system:serviceaccount:kube-system:generic-garbage-collector",
        "system:serviceaccount:kube-system:job-controller",
        "system:serviceaccount:kube-system:replicaset-controller",
        "system:serviceaccount:kube-system:replication-controller",
        "system:serviceaccount:kube-system:statefulset-controller",
    )
    exempt_groups: tuple[str, ...] = ()
    exempt_namespaces: tuple[str, ...] = ("kube-system",)
    namespace: str = "pod-replace-guard"
    judged_subresources: tuple[str, ...] = ()
    # HTTP
    max_body_bytes: int = 7 * 1024 * 1024
    log_level: str = "INFO"
    # Serving (gunicorn + TLS)
    bind: str = "0.0.0.0:8443"
    health_bind: str = ""
    cert_dir: str = "certs"
    client_ca: str = ""
    tls_min_version: str = "1.2"
    workers: int = 2
    threads: int = 8
    keepalive: int = 120
    graceful_timeout: int = 20
    cert_reload_seconds: float = 1.0
    # Hostile clients (webhook/serving/)
    handshake_timeout: float = 5.0
    request_timeout: float = 10.0
    max_connections: int = 256
    inflight_bytes: int = 8 * 1024 * 1024
    # Certificates and registration (`pod-replace-guard controller`, webhook/controller.py)
    webhook_configuration: str = ""
    service: str = "pod-replace-guard"
    webhook_url: str = ""
    failure_policy: str = "Fail"
    timeout_seconds: int = 3
    namespace_selector: str = ""
    cert_secret: str = ""
    # A ConfigMap in PRG_NAMESPACE the controller updates with dryRun=All before it
    # registers the entry: proof that the API server itself reaches the webhook.
    canary_configmap: str = ""
    ca_file: str = ""
    ca_lifetime: str = "730d"
    cert_lifetime: str = "90d"
    sync_seconds: float = 10.0

    @property
    def judged_namespaces_excluded(self) -> frozenset[str]:
        """Namespaces never judged: the configured ones plus the webhook's own."""
        return frozenset((*self.exempt_namespaces, self.namespace))

    @property
    def health_port(self) -> str:
        """The port of the health listener, "" when there is none."""
        return port_of(self.health_bind) if self.health_bind else ""

    @property
    def cert_file(self) -> Path:
        return Path(self.cert_dir) / "tls.crt"

    @property
    def key_file(self) -> Path:
        return Path(self.cert_dir) / "tls.key"


def _as_str(key: str, value: object) -> str:
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ConfigError(f"{key}: must be a string")
    return str(value)


def _as_list(key: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        items = [item.strip() for item in value.split(",")]
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        items = [item.strip() for item in value]
    else:
        raise ConfigError(f"{key}: must be a list of strings (or a comma-separated string)")
    return tuple(item for item in items if item)


_Number = TypeVar("_Number", int, float)


def _as_number(
    kind: type[_Number], minimum: _Number, maximum: _Number
) -> Callable[[str, object], _Number]:
    what = "a whole number" if kind is int else "a number"

    def parse(key: str, value: object) -> _Number:
        try:
            number = kind(str(value).strip()) if not isinstance(value, bool) else None
        except ValueError:
            number = None
        if number is None or not minimum <= number <= maximum:
            raise ConfigError(f"{key}: must be {what} from {minimum} to {maximum}")
        return number

    return parse


def _one_of(
    choices: tuple[str, ...], normalise: Callable[[str], str] = str
) -> Callable[[str, object], str]:
    def parse(key: str, value: object) -> str:
        text = normalise(_as_str(key, value).strip())
        if text not in choices:
            raise ConfigError(f"{key}: must be one of {', '.join(choices)}")
        return text

    return parse


def _subset_of(choices: tuple[str, ...]) -> Callable[[str, object], tuple[str, ...]]:
    def parse(key: str, value: object) -> tuple[str, ...]:
        items = _as_list(key, value)
        unknown = [item for item in items if item not in choices]
        if unknown:
            raise ConfigError(f"{key}: each item must be one of {', '.join(choices)}")
        return tuple(dict.fromkeys(items))

    return parse


def _name(key: str, value: object) -> str:
    text = _as_str(key, value).strip()
    if not text:
        raise ConfigError(f"{key}: must not be empty")
    return text


def _bind(key: str, value: object) -> str:
    text = _as_str(key, value).strip()
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{key}: must be HOST:PORT, e.g. 0.0.0.0:8443")
    return text


_DURATION_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_seconds(text: str) -> int:
    """Seconds in a duration setting: a whole number and a unit (s, m, h, d), e.g. 90d."""
    number, unit = text[:-1], text[-1:]
    return int(number) * _DURATION_UNITS[unit]


# Certificates end before the year 9999 (X.509 dates, Python's datetime) with room.
_DURATION_MAXIMUM_DAYS: Final = 36500


def _duration(minimum: int) -> Callable[[str, object], str]:
    def parse(key: str, value: object) -> str:
        text = _as_str(key, value).strip()
        number, unit = text[:-1], text[-1:]
        # ASCII digits only: str.isdigit() also takes "²", which int() refuses.
        if not re.fullmatch(r"[0-9]{1,9}", number) or unit not in _DURATION_UNITS:
            raise ConfigError(f"{key}: must be a whole number and a unit (s, m, h, d), e.g. 90d")
        if duration_seconds(text) < minimum:
            raise ConfigError(f"{key}: must be at least {minimum} s")
        if duration_seconds(text) > _DURATION_MAXIMUM_DAYS * 86400:
            raise ConfigError(f"{key}: must be at most {_DURATION_MAXIMUM_DAYS}d")
        return text

    return parse


def _https_url(key: str, value: object) -> str:
    """An https:// URL the API server accepts as clientConfig.url: a host, a valid
    port, and no user information, query or fragment."""
    text = _as_str(key, value).strip()
    if not text:
        return text
    if not text.startswith("https://"):
        raise ConfigError(f"{key}: must be an https:// URL (or empty: the Service)")
    try:
        url = urlsplit(text)
        host, _ = url.hostname, url.port
    except ValueError as error:
        raise ConfigError(f"{key}: not a valid URL (host or port)") from error
    if not host:
        raise ConfigError(f"{key}: must name a host")
    if url.username is not None or url.password is not None or url.query or url.fragment:
        raise ConfigError(f"{key}: must not hold user information, a query or a fragment")
    return text


_DNS_LABEL: Final = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")


def _dns_label(key: str, value: object) -> str:
    """A Service name (DNS-1035 label), as the API server requires in clientConfig."""
    text = _as_str(key, value).strip()
    if not _DNS_LABEL.fullmatch(text):
        raise ConfigError(
            f"{key}: must be a DNS label (at most 63 lowercase letters, digits and '-', "
            "starting with a letter)"
        )
    return text


def _identities(key: str, value: object) -> tuple[str, ...]:
    """User or group names: they end up in CEL string literals and in JSON sent to
    the API server, which cannot hold an undecodable byte of the environment."""
    items = _as_list(key, value)
    for item in items:
        try:
            item.encode("utf-8")
        except UnicodeEncodeError as error:
            raise ConfigError(f"{key}: must be valid UTF-8 text") from error
    return items


def _label_selector(key: str, value: object) -> str:
    """A namespaceSelector (JSON or YAML mapping of matchLabels, matchExpressions),
    kept as canonical JSON."""
    if isinstance(value, str):
        try:
            value = yaml.safe_load(value) if value.strip() else {}
        except yaml.YAMLError as error:
            raise ConfigError(f"{key}: not valid JSON or YAML") from error
    if value is None:
        value = {}
    if not isinstance(value, dict) or set(value) - {"matchLabels", "matchExpressions"}:
        raise ConfigError(f"{key}: must be a mapping of matchLabels and matchExpressions")
    labels = value.get("matchLabels") or {}
    expressions = value.get("matchExpressions") or []
    if not isinstance(labels, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        raise ConfigError(f"{key}: matchLabels must map strings to strings")
    if not isinstance(expressions, list) or not all(
        isinstance(e, dict)
        and isinstance(e.get("key"), str)
        and e.get("operator") in ("In", "NotIn", "Exists", "DoesNotExist")
        for e in expressions
    ):
        raise ConfigError(
            f"{key}: matchExpressions must be a list of {{key, operator, values}} "
            "(operator In, NotIn, Exists or DoesNotExist)"
        )
    for expression in expressions:
        values = expression.get("values") or []
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ConfigError(f"{key}: matchExpressions values must be a list of strings")
        if bool(values) != (expression["operator"] in ("In", "NotIn")):
            raise ConfigError(
                f"{key}: matchExpressions: In and NotIn need values, Exists and "
                "DoesNotExist take none"
            )
    kept = {k: v for k, v in (("matchLabels", labels), ("matchExpressions", expressions)) if v}
    return json.dumps(kept, sort_keys=True) if kept else ""


def _optional_name(key: str, value: object) -> str:
    return _as_str(key, value).strip()


def _optional_bind(key: str, value: object) -> str:
    """HOST:PORT, or empty for none."""
    return _bind(key, value) if _as_str(key, value).strip() else ""


def _path(key: str, value: object) -> str:
    return _as_str(key, value).strip()


# field name -> (YAML key, parser). The environment variable is PRG_ + the field
# name in upper case, e.g. exempt_users -> PRG_EXEMPT_USERS.
_FIELDS: Final[dict[str, tuple[str, Callable[[str, object], Any]]]] = {
    "mode": ("mode", _one_of(MODES, str.lower)),
    "exempt_users": ("exemptUsers", _identities),
    "exempt_groups": ("exemptGroups", _identities),
    "exempt_namespaces": ("exemptNamespaces", _as_list),
    "namespace": ("namespace", _name),
    "judged_subresources": ("judgedSubresources", _subset_of(JUDGEABLE_SUBRESOURCES)),
    "max_body_bytes": ("maxBodyBytes", _as_number(int, 1024, 64 * 1024 * 1024)),
    "log_level": ("logLevel", _one_of(LOG_LEVELS, str.upper)),
    "bind": ("bind", _bind),
    "health_bind": ("healthBind", _optional_bind),
    "cert_dir": ("certDir", _path),
    "client_ca": ("clientCA", _path),
    "tls_min_version": ("tlsMinVersion", _one_of(TLS_VERSIONS)),
    "workers": ("workers", _as_number(int, 1, 64)),
    "threads": ("threads", _as_number(int, 1, 256)),
    "keepalive": ("keepalive", _as_number(int, 1, 3600)),
    "graceful_timeout": ("gracefulTimeout", _as_number(int, 1, 3600)),
    "cert_reload_seconds": ("certReloadSeconds", _as_number(float, 0.0, 3600.0)),
    "handshake_timeout": ("handshakeTimeout", _as_number(float, 0.1, 60.0)),
    "request_timeout": ("requestTimeout", _as_number(float, 0.1, 300.0)),
    "max_connections": ("maxConnections", _as_number(int, 4, 100_000)),
    "inflight_bytes": ("inflightBytes", _as_number(int, 64 * 1024, 1024 * 1024 * 1024)),
    "webhook_configuration": ("webhookConfiguration", _optional_name),
    "service": ("service", _dns_label),
    "webhook_url": ("webhookURL", _https_url),
    "failure_policy": ("failurePolicy", _one_of(("Fail", "Ignore"))),
    "timeout_seconds": ("timeoutSeconds", _as_number(int, 1, 30)),
    "namespace_selector": ("namespaceSelector", _label_selector),
    "cert_secret": ("certSecret", _optional_name),
    "canary_configmap": ("canaryConfigMap", _optional_name),
    "ca_file": ("caFile", _path),
    # Lifetimes of minutes are for tests of rotation; a serving certificate renewed a
    # third before its end must outlive a few sync periods.
    "ca_lifetime": ("caLifetime", _duration(120)),
    "cert_lifetime": ("certLifetime", _duration(60)),
    "sync_seconds": ("syncSeconds", _as_number(float, 0.2, 3600.0)),
}


def env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


def _read_yaml(path: str) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"PRG_CONFIG: cannot read {path}: {error.strerror}") from error
    except UnicodeDecodeError as error:
        raise ConfigError(f"PRG_CONFIG: {path} is not UTF-8 text") from error
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"PRG_CONFIG: {path} is not valid YAML") from error
    except RecursionError as error:
        raise ConfigError(f"PRG_CONFIG: {path} nests too deeply") from error
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"PRG_CONFIG: {path} must hold a mapping of settings")
    return data


def load_settings(
    environ: Mapping[str, str] | None = None,
    config_file: str | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Settings:
    """Build Settings from defaults, a YAML file, the environment and overrides.

    ``overrides`` maps field names to values (command-line flags); None values are
    ignored so that unset flags fall through.
    """
    env = dict(os.environ if environ is None else environ)
    values: dict[str, Any] = {}
    config_file = config_file or env.get(ENV_PREFIX + "CONFIG") or None
    if config_file:
        by_yaml_key = {yaml_key: name for name, (yaml_key, _) in _FIELDS.items()}
        for key, value in _read_yaml(config_file).items():
            name = by_yaml_key.get(str(key))
            if name is None:
                raise ConfigError(f"{key}: unknown setting in {config_file}")
            values[name] = _FIELDS[name][1](str(key), value)
    known_env = {env_name(name) for name in _FIELDS} | {ENV_PREFIX + "CONFIG"}
    for key in sorted(env):
        if key.startswith(ENV_PREFIX) and key not in known_env:
            raise ConfigError(f"{key}: unknown setting (known: {', '.join(sorted(known_env))})")
    for name, (_, parse) in _FIELDS.items():
        if env_name(name) in env:
            values[name] = parse(env_name(name), env[env_name(name)])
    for name, value in (overrides or {}).items():
        if value is not None:
            values[name] = _FIELDS[name][1]("--" + name.replace("_", "-"), value)
    settings = Settings(**values)
    if duration_seconds(settings.cert_lifetime) > duration_seconds(settings.ca_lifetime):
        raise ConfigError(
            f"{env_name('cert_lifetime')}: must not be longer than {env_name('ca_lifetime')}"
        )
    if settings.health_bind and port_of(settings.health_bind) == port_of(settings.bind):
        raise ConfigError(
            f"{env_name('health_bind')}: must use another port than {env_name('bind')}"
        )
    return settings


def port_of(bind: str) -> str:
    """The port of a HOST:PORT setting."""
    return bind.rpartition(":")[2]


def cautions(settings: Settings) -> list[str]:
    """Valid settings that are known to cost refused updates, each naming its key."""
    found = []
    if settings.keepalive <= API_SERVER_IDLE_TIMEOUT_SECONDS:
        # Go retries a POST only if none of it was written, so a connection the
        # webhook closes as idle, just as the API server reuses it, fails that
        # admission call (failurePolicy Fail: a refused pod update).
        found.append(
            f"{env_name('keepalive')}: {settings.keepalive} s is not longer than the API "
            f"server's {API_SERVER_IDLE_TIMEOUT_SECONDS} s idle-connection timeout; an "
            "update sent just as the webhook closes an idle connection fails"
        )
    return found


def describe() -> list[tuple[str, str, str, str]]:
    """(environment variable, YAML key, default, field name) for the README table."""
    defaults = Settings()
    rows = []
    for field in dataclasses.fields(Settings):
        yaml_key = _FIELDS[field.name][0]
        default = getattr(defaults, field.name)
        shown = ",".join(default) if isinstance(default, tuple) else str(default)
        rows.append((env_name(field.name), yaml_key, shown, field.name))
    return rows
