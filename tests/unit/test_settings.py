"""Configuration (webhook.settings): defaults, PRG_* variables, YAML, precedence, errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from webhook.settings import (
    API_SERVER_IDLE_TIMEOUT_SECONDS,
    ENV_PREFIX,
    ConfigError,
    Settings,
    cautions,
    describe,
    env_name,
    load_settings,
)

DEFAULTS: dict[str, Any] = {
    "mode": "enforce",
    "exempt_users": (
        "system:kube-controller-manager",
        "system:serviceaccount:kube-system:daemon-set-controller",
        "system:serviceaccount:kube-system:generic-garbage-collector",
        "system:serviceaccount:kube-system:job-controller",
        "system:serviceaccount:kube-system:replicaset-controller",
        "system:serviceaccount:kube-system:replication-controller",
        "system:serviceaccount:kube-system:statefulset-controller",
    ),
    "exempt_groups": (),
    "exempt_namespaces": ("kube-system",),
    "namespace": "pod-replace-guard",
    "max_body_bytes": 7 * 1024 * 1024,
    "log_level": "INFO",
    "bind": "0.0.0.0:8443",
    "health_bind": "",
    "cert_dir": "certs",
    "client_ca": "",
    "tls_min_version": "1.2",
    "workers": 2,
    "threads": 8,
    "keepalive": 120,
    "graceful_timeout": 20,
    "cert_reload_seconds": 1.0,
    "handshake_timeout": 5.0,
    "request_timeout": 10.0,
    "max_connections": 256,
    "inflight_bytes": 8 * 1024 * 1024,
    "webhook_configuration": "",
    "service": "pod-replace-guard",
    "webhook_url": "",
    "failure_policy": "Fail",
    "timeout_seconds": 3,
    "namespace_selector": "",
    "cert_secret": "",
    "canary_configmap": "",
    "ca_file": "",
    "ca_lifetime": "730d",
    "cert_lifetime": "90d",
    "sync_seconds": 10.0,
    "judged_subresources": (),
}


def write_yaml(tmp_path: Path, text: str, name: str = "config.yaml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


# --- defaults ---------------------------------------------------------------------------


def test_defaults() -> None:
    settings = load_settings(environ={})
    assert dataclasses.asdict(settings) == DEFAULTS
    assert settings == Settings()


def test_every_field_has_a_documented_default() -> None:
    assert {field.name for field in dataclasses.fields(Settings)} == set(DEFAULTS)


def test_default_exempt_namespaces_include_the_webhooks_own() -> None:
    assert Settings().judged_namespaces_excluded == frozenset({"kube-system", "pod-replace-guard"})
    custom = Settings(exempt_namespaces=("a", "b"), namespace="guard")
    assert custom.judged_namespaces_excluded == frozenset({"a", "b", "guard"})


def test_certificate_paths_follow_cert_dir() -> None:
    settings = Settings(cert_dir="/etc/webhook/certs")
    assert settings.cert_file == Path("/etc/webhook/certs/tls.crt")
    assert settings.key_file == Path("/etc/webhook/certs/tls.key")


def test_settings_are_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().mode = "warn"  # type: ignore[misc]


def test_environment_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith(ENV_PREFIX):
            monkeypatch.delenv(key)
    monkeypatch.setenv("PRG_MODE", "audit")
    assert load_settings().mode == "audit"


# --- environment variables ----------------------------------------------------------------

ENV_CASES: list[tuple[str, str, str, Any]] = [
    ("PRG_MODE", "warn", "mode", "warn"),
    ("PRG_MODE", " AUDIT ", "mode", "audit"),
    ("PRG_EXEMPT_USERS", "alice, bob ,,carol", "exempt_users", ("alice", "bob", "carol")),
    ("PRG_EXEMPT_USERS", "", "exempt_users", ()),
    ("PRG_EXEMPT_GROUPS", "system:masters", "exempt_groups", ("system:masters",)),
    ("PRG_EXEMPT_NAMESPACES", "infra,monitoring", "exempt_namespaces", ("infra", "monitoring")),
    ("PRG_NAMESPACE", "guard", "namespace", "guard"),
    ("PRG_MAX_BODY_BYTES", "1024", "max_body_bytes", 1024),
    ("PRG_MAX_BODY_BYTES", " 2048 ", "max_body_bytes", 2048),
    ("PRG_LOG_LEVEL", "debug", "log_level", "DEBUG"),
    ("PRG_BIND", "127.0.0.1:9443", "bind", "127.0.0.1:9443"),
    ("PRG_BIND", "[::1]:8443", "bind", "[::1]:8443"),
    ("PRG_CERT_DIR", " /tmp/c ", "cert_dir", "/tmp/c"),
    ("PRG_CLIENT_CA", "/etc/ca.crt", "client_ca", "/etc/ca.crt"),
    ("PRG_TLS_MIN_VERSION", "1.3", "tls_min_version", "1.3"),
    ("PRG_WORKERS", "4", "workers", 4),
    ("PRG_THREADS", "256", "threads", 256),
    ("PRG_KEEPALIVE", "1", "keepalive", 1),
    ("PRG_GRACEFUL_TIMEOUT", "3600", "graceful_timeout", 3600),
    ("PRG_CERT_RELOAD_SECONDS", "0.25", "cert_reload_seconds", 0.25),
    ("PRG_CERT_RELOAD_SECONDS", "0", "cert_reload_seconds", 0.0),
    ("PRG_HEALTH_BIND", "0.0.0.0:8081", "health_bind", "0.0.0.0:8081"),
    ("PRG_HEALTH_BIND", " ", "health_bind", ""),
    ("PRG_HANDSHAKE_TIMEOUT", "0.5", "handshake_timeout", 0.5),
    ("PRG_REQUEST_TIMEOUT", "30", "request_timeout", 30.0),
    ("PRG_MAX_CONNECTIONS", "1000", "max_connections", 1000),
    ("PRG_INFLIGHT_BYTES", "1048576", "inflight_bytes", 1048576),
]


@pytest.mark.parametrize(
    ("variable", "value", "field", "want"), ENV_CASES, ids=[f"{c[0]}={c[1]!r}" for c in ENV_CASES]
)
def test_environment_variables(variable: str, value: str, field: str, want: Any) -> None:
    settings = load_settings(environ={variable: value})
    assert getattr(settings, field) == want


def test_env_names_are_prefix_plus_upper_case_field() -> None:
    assert env_name("exempt_users") == "PRG_EXEMPT_USERS"
    assert {row[0] for row in describe()} == {env_name(name) for name in DEFAULTS}


def test_describe_lists_every_setting_with_its_default() -> None:
    rows = {row[3]: row for row in describe()}
    assert set(rows) == set(DEFAULTS)
    assert rows["mode"] == ("PRG_MODE", "mode", "enforce", "mode")
    assert rows["exempt_users"][1] == "exemptUsers"
    assert rows["exempt_users"][2].split(",")[0] == "system:kube-controller-manager"
    assert rows["exempt_groups"][2] == ""
    assert rows["max_body_bytes"][2] == str(7 * 1024 * 1024)


def test_unrelated_environment_variables_are_ignored() -> None:
    assert load_settings(environ={"HOME": "/root", "PRGX_MODE": "warn", "prg_mode": "x"}) == (
        Settings()
    )


@pytest.mark.parametrize("variable", ["PRG_MODES", "PRG_", "PRG_EXEMPT_USER", "PRG_PORT"])
def test_unknown_prg_variables_are_rejected(variable: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={variable: "x"})
    assert str(caught.value).startswith(variable + ":")
    assert "unknown setting" in str(caught.value)


# --- YAML file ------------------------------------------------------------------------------

YAML_ALL = """
mode: warn
exemptUsers: [alice, " bob "]
exemptGroups:
  - platform
exemptNamespaces: "infra, monitoring"
namespace: guard
maxBodyBytes: 4096
logLevel: warning
bind: "127.0.0.1:8443"
certDir: /etc/webhook
clientCA: /etc/ca.crt
tlsMinVersion: 1.3
workers: 3
threads: "16"
keepalive: 75
gracefulTimeout: 10
certReloadSeconds: 2.5
healthBind: "127.0.0.1:8081"
handshakeTimeout: 2
requestTimeout: 4.5
maxConnections: 64
inflightBytes: 65536
judgedSubresources: [resize, ephemeralcontainers, resize]
webhookConfiguration: guard-webhook
service: guard
webhookURL: https://guard.example:8443/validate
failurePolicy: Ignore
timeoutSeconds: 5
namespaceSelector: {matchLabels: {team: a}}
certSecret: guard-certificates
canaryConfigMap: guard-canary
caFile: /etc/ca-bundle.crt
caLifetime: 365d
certLifetime: 30d
syncSeconds: 5
"""


def test_yaml_file_sets_every_key(tmp_path: Path) -> None:
    settings = load_settings(environ={}, config_file=write_yaml(tmp_path, YAML_ALL))
    assert dataclasses.asdict(settings) == {
        "mode": "warn",
        "exempt_users": ("alice", "bob"),
        "exempt_groups": ("platform",),
        "exempt_namespaces": ("infra", "monitoring"),
        "namespace": "guard",
        "max_body_bytes": 4096,
        "log_level": "WARNING",
        "bind": "127.0.0.1:8443",
        "cert_dir": "/etc/webhook",
        "client_ca": "/etc/ca.crt",
        "tls_min_version": "1.3",
        "workers": 3,
        "threads": 16,
        "keepalive": 75,
        "graceful_timeout": 10,
        "cert_reload_seconds": 2.5,
        "health_bind": "127.0.0.1:8081",
        "handshake_timeout": 2.0,
        "request_timeout": 4.5,
        "max_connections": 64,
        "inflight_bytes": 65536,
        "judged_subresources": ("resize", "ephemeralcontainers"),
        "webhook_configuration": "guard-webhook",
        "service": "guard",
        "webhook_url": "https://guard.example:8443/validate",
        "failure_policy": "Ignore",
        "timeout_seconds": 5,
        "namespace_selector": '{"matchLabels": {"team": "a"}}',
        "cert_secret": "guard-certificates",
        "canary_configmap": "guard-canary",
        "ca_file": "/etc/ca-bundle.crt",
        "ca_lifetime": "365d",
        "cert_lifetime": "30d",
        "sync_seconds": 5.0,
    }


def test_yaml_file_from_prg_config(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "mode: audit\n")
    assert load_settings(environ={"PRG_CONFIG": path}).mode == "audit"


def test_config_file_argument_wins_over_prg_config(tmp_path: Path) -> None:
    env_file = write_yaml(tmp_path, "mode: audit\n", "env.yaml")
    flag_file = write_yaml(tmp_path, "mode: warn\n", "flag.yaml")
    assert load_settings(environ={"PRG_CONFIG": env_file}, config_file=flag_file).mode == "warn"


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_empty_yaml_file_means_defaults(tmp_path: Path, text: str) -> None:
    assert load_settings(environ={}, config_file=write_yaml(tmp_path, text)) == Settings()


def test_empty_prg_config_means_no_file() -> None:
    assert load_settings(environ={"PRG_CONFIG": ""}) == Settings()


# --- precedence: defaults < YAML < env < overrides -----------------------------------------


def test_precedence(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "mode: warn\nworkers: 3\nthreads: 5\nnamespace: from-yaml\n")
    env = {"PRG_MODE": "audit", "PRG_WORKERS": "4"}
    settings = load_settings(
        environ=env, config_file=path, overrides={"mode": "enforce", "bind": None}
    )
    assert settings.mode == "enforce"  # override beats env and YAML
    assert settings.workers == 4  # env beats YAML
    assert settings.threads == 5  # YAML beats the default
    assert settings.namespace == "from-yaml"
    assert settings.bind == "0.0.0.0:8443"  # a None override falls through to the default
    assert load_settings(environ=env, config_file=path).mode == "audit"
    assert load_settings(environ={}, config_file=path).mode == "warn"


def test_overrides_are_validated_and_normalised() -> None:
    settings = load_settings(environ={}, overrides={"workers": "7", "mode": "WARN"})
    assert settings.workers == 7
    assert settings.mode == "warn"


# --- bad values: ConfigError whose message starts with the key -------------------------------

BAD_VALUES: list[tuple[str, str]] = [
    ("judged_subresources", "status"),
    ("judged_subresources", "resize,binding"),
    ("mode", "block"),
    ("mode", ""),
    ("log_level", "TRACE"),
    ("tls_min_version", "1.1"),
    ("tls_min_version", "1.0"),
    ("max_body_bytes", "1023"),
    ("max_body_bytes", str(64 * 1024 * 1024 + 1)),
    ("max_body_bytes", "7MiB"),
    ("max_body_bytes", ""),
    ("workers", "0"),
    ("workers", "65"),
    ("workers", "2.5"),
    ("workers", "two"),
    ("threads", "0"),
    ("threads", "257"),
    ("keepalive", "0"),
    ("keepalive", "3601"),
    ("graceful_timeout", "-1"),
    ("graceful_timeout", "1e3"),
    ("cert_reload_seconds", "-0.5"),
    ("cert_reload_seconds", "3600.5"),
    ("cert_reload_seconds", "nan"),
    ("cert_reload_seconds", "inf"),
    ("cert_reload_seconds", "soon"),
    ("bind", "8443"),
    ("bind", ":8443"),
    ("bind", "localhost:"),
    ("bind", "localhost:http"),
    ("bind", "localhost:65536"),
    ("bind", "localhost:-1"),
    ("health_bind", "8081"),
    ("handshake_timeout", "0"),
    ("handshake_timeout", "61"),
    ("request_timeout", "0.05"),
    ("max_connections", "3"),
    ("inflight_bytes", "1024"),
]


@pytest.mark.parametrize(("field", "value"), BAD_VALUES, ids=[f"{f}={v!r}" for f, v in BAD_VALUES])
def test_bad_environment_values(field: str, value: str) -> None:
    variable = env_name(field)
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={variable: value})
    assert str(caught.value).startswith(variable + ": ")


def _yaml_key(field: str) -> str:
    return {row[3]: row[1] for row in describe()}[field]


@pytest.mark.parametrize(("field", "value"), BAD_VALUES, ids=[f"{f}={v!r}" for f, v in BAD_VALUES])
def test_bad_yaml_values(tmp_path: Path, field: str, value: str) -> None:
    key = _yaml_key(field)
    path = write_yaml(tmp_path, f"{key}: {value!r}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={}, config_file=path)
    assert str(caught.value).startswith(key + ": ")


@pytest.mark.parametrize(("field", "value"), BAD_VALUES, ids=[f"{f}={v!r}" for f, v in BAD_VALUES])
def test_bad_override_values(field: str, value: str) -> None:
    flag = "--" + field.replace("_", "-")
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={}, overrides={field: value})
    assert str(caught.value).startswith(flag + ": ")


BAD_YAML_TYPES: list[tuple[str, str]] = [
    ("mode", "[enforce]"),
    ("mode", "true"),
    ("mode", "{a: b}"),
    ("namespace", "[a]"),
    ("namespace", "true"),
    ("exemptUsers", "[1, 2]"),
    ("exemptUsers", "{a: b}"),
    ("exemptUsers", "5"),
    ("exemptGroups", "[[a]]"),
    ("exemptNamespaces", "true"),
    ("workers", "true"),
    ("workers", "[1]"),
    ("workers", "2.5"),
    ("threads", "null"),
    ("certReloadSeconds", "false"),
    ("maxBodyBytes", "{}"),
    ("certDir", "[a]"),
    ("clientCA", "{a: 1}"),
    ("bind", "8443"),
    ("tlsMinVersion", "1.1"),
]


@pytest.mark.parametrize(
    ("key", "text"), BAD_YAML_TYPES, ids=[f"{k}:{t}" for k, t in BAD_YAML_TYPES]
)
def test_wrong_yaml_types(tmp_path: Path, key: str, text: str) -> None:
    path = write_yaml(tmp_path, f"{key}: {text}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={}, config_file=path)
    assert str(caught.value).startswith(key + ": ")


@pytest.mark.parametrize("key", ["mod", "exempt_users", "Mode", "port", "1"])
def test_unknown_yaml_keys_are_rejected(tmp_path: Path, key: str) -> None:
    path = write_yaml(tmp_path, f"{key}: x\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={}, config_file=path)
    assert str(caught.value).startswith(key + ": ")
    assert "unknown setting" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("- mode\n- warn\n", "must hold a mapping"),
        ("just a string\n", "must hold a mapping"),
        ("mode: [unclosed\n", "is not valid YAML"),
        ("a: b\n  c: d\n", "is not valid YAML"),
    ],
)
def test_yaml_file_that_is_not_a_mapping(tmp_path: Path, text: str, fragment: str) -> None:
    path = write_yaml(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={}, config_file=path)
    assert str(caught.value).startswith("PRG_CONFIG: ")
    assert fragment in str(caught.value)


def test_missing_yaml_file(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"PRG_CONFIG": missing})
    assert str(caught.value).startswith("PRG_CONFIG: cannot read " + missing)


def test_yaml_value_errors_are_reported_before_env_is_read(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "workers: 0\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"PRG_WORKERS": "4"}, config_file=path)
    assert str(caught.value).startswith("workers: ")


# --- cautions: valid settings known to cost refused updates ---------------------------------------


def test_defaults_need_no_caution() -> None:
    assert cautions(Settings()) == []


@pytest.mark.parametrize(
    ("keepalive", "cautioned"),
    [
        (1, True),
        (30, True),
        (API_SERVER_IDLE_TIMEOUT_SECONDS, True),
        (API_SERVER_IDLE_TIMEOUT_SECONDS + 1, False),
        (3600, False),
    ],
)
def test_keepalive_not_longer_than_the_api_servers_idle_timeout_is_cautioned(
    keepalive: int, cautioned: bool
) -> None:
    found = cautions(Settings(keepalive=keepalive))
    assert bool(found) is cautioned
    if cautioned:
        assert found[0].startswith("PRG_KEEPALIVE: ")
        assert f"{API_SERVER_IDLE_TIMEOUT_SECONDS} s" in found[0]


def test_health_listener_must_not_share_the_admission_port() -> None:
    with pytest.raises(ConfigError, match="PRG_HEALTH_BIND"):
        load_settings(environ={"PRG_BIND": "0.0.0.0:8443", "PRG_HEALTH_BIND": "127.0.0.1:8443"})


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"PRG_CA_LIFETIME": "90"}, "PRG_CA_LIFETIME"),
        ({"PRG_CA_LIFETIME": "1m"}, "PRG_CA_LIFETIME"),
        ({"PRG_CERT_LIFETIME": "9999999999d"}, "PRG_CERT_LIFETIME"),
        ({"PRG_CA_LIFETIME": "10m", "PRG_CERT_LIFETIME": "20m"}, "PRG_CERT_LIFETIME"),
        ({"PRG_FAILURE_POLICY": "fail"}, "PRG_FAILURE_POLICY"),
        ({"PRG_WEBHOOK_URL": "http://127.0.0.1/validate"}, "PRG_WEBHOOK_URL"),
        ({"PRG_NAMESPACE_SELECTOR": "[1]"}, "PRG_NAMESPACE_SELECTOR"),
        (
            {"PRG_NAMESPACE_SELECTOR": '{"matchExpressions": [{"key": "a", "operator": "Gt"}]}'},
            "PRG_NAMESPACE_SELECTOR",
        ),
        ({"PRG_TIMEOUT_SECONDS": "31"}, "PRG_TIMEOUT_SECONDS"),
    ],
)
def test_controller_settings_are_checked(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_settings(environ=env)


def test_a_namespace_selector_is_kept_as_canonical_json() -> None:
    settings = load_settings(environ={"PRG_NAMESPACE_SELECTOR": "matchLabels: {team: a}"})
    assert settings.namespace_selector == '{"matchLabels": {"team": "a"}}'


@pytest.mark.parametrize(
    ("env", "named"),
    [
        # int("²") fails though "²".isdigit(): a ValueError, not a ConfigError.
        ({"PRG_CA_LIFETIME": "²d"}, "PRG_CA_LIFETIME"),
        ({"PRG_CA_LIFETIME": "\u0663\u0666\u0665d"}, "PRG_CA_LIFETIME"),
        # Past the year 9999: make_ca raised OverflowError in every sync.
        ({"PRG_CA_LIFETIME": "999999999d"}, "PRG_CA_LIFETIME"),
        ({"PRG_CA_LIFETIME": "3000000d", "PRG_CERT_LIFETIME": "3000000d"}, "LIFETIME"),
        # What the API server refuses in clientConfig.url: the controller retried a 422
        # for ever, or crashed on the port.
        ({"PRG_WEBHOOK_URL": "https://"}, "PRG_WEBHOOK_URL"),
        ({"PRG_WEBHOOK_URL": "https://guard:99999/validate"}, "PRG_WEBHOOK_URL"),
        ({"PRG_WEBHOOK_URL": "https://[::1/validate"}, "PRG_WEBHOOK_URL"),
        ({"PRG_WEBHOOK_URL": "https://user:pw@guard/validate"}, "PRG_WEBHOOK_URL"),
        ({"PRG_WEBHOOK_URL": "https://guard/validate?x=1"}, "PRG_WEBHOOK_URL"),
        ({"PRG_WEBHOOK_URL": "https://guard/validate#f"}, "PRG_WEBHOOK_URL"),
        ({"PRG_SERVICE": "My_Service"}, "PRG_SERVICE"),
        (
            {"PRG_NAMESPACE_SELECTOR": '{"matchExpressions": [{"key": "a", "operator": "In"}]}'},
            "PRG_NAMESPACE_SELECTOR",
        ),
        (
            {
                "PRG_NAMESPACE_SELECTOR": '{"matchExpressions": '
                '[{"key": "a", "operator": "Exists", "values": ["x"]}]}'
            },
            "PRG_NAMESPACE_SELECTOR",
        ),
        (
            {
                "PRG_NAMESPACE_SELECTOR": '{"matchExpressions": '
                '[{"key": "a", "operator": "In", "values": [1]}]}'
            },
            "PRG_NAMESPACE_SELECTOR",
        ),
        # An undecodable byte in the environment (surrogateescape): no CEL string, nor
        # JSON to send, can hold it.
        ({"PRG_EXEMPT_USERS": "alice,bob\udcff"}, "PRG_EXEMPT_USERS"),
        ({"PRG_EXEMPT_GROUPS": "ops\udcff"}, "PRG_EXEMPT_GROUPS"),
    ],
)
def test_controller_settings_the_cluster_would_refuse_are_refused_first(
    env: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        load_settings(environ=env)


def test_a_century_and_leading_zeros_are_fine() -> None:
    settings = load_settings(environ={"PRG_CA_LIFETIME": "36500d", "PRG_CERT_LIFETIME": "007d"})
    assert (settings.ca_lifetime, settings.cert_lifetime) == ("36500d", "007d")
    url = "https://[fd00::7]:8443/validate"
    assert load_settings(environ={"PRG_WEBHOOK_URL": url}).webhook_url == url
