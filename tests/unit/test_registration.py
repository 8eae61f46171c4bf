"""The registered entry (webhook.registration) and the controller's decisions
(webhook.controller) with an in-memory cluster; the real API server is in
tests/e2e/test_controller.py."""

from __future__ import annotations

import base64
import contextlib
import copy
import datetime
import json
from pathlib import Path
from typing import Any

import pytest

from webhook.controller import Conflict, Controller, ControllerError
from webhook.registration import (
    CANARY_ANNOTATION,
    CANARY_LABEL,
    CANARY_MESSAGE,
    CANARY_NAME,
    DIGEST_ANNOTATION,
    WEBHOOK_NAME,
    answer_canary,
    canary_entry,
    canary_message,
    canary_token,
    entry_digest,
    webhook_entry,
)
from webhook.review import MalformedReview
from webhook.settings import load_settings


def test_the_entry_follows_the_settings() -> None:
    settings = load_settings(
        environ={
            "PRG_NAMESPACE": "guard",
            "PRG_EXEMPT_NAMESPACES": "kube-system,kube-node-lease",
            "PRG_EXEMPT_USERS": "alice,o'brien",
            "PRG_EXEMPT_GROUPS": 'ops"team',
            "PRG_JUDGED_SUBRESOURCES": "resize",
            "PRG_NAMESPACE_SELECTOR": '{"matchLabels": {"guarded": "yes"}}',
            "PRG_TIMEOUT_SECONDS": "5",
        }
    )
    entry = webhook_entry(settings, "QUJD")
    assert entry["name"] == WEBHOOK_NAME
    assert entry["rules"][0]["resources"] == ["pods", "pods/resize"]
    assert entry["timeoutSeconds"] == 5
    assert entry["clientConfig"]["service"]["namespace"] == "guard"
    assert entry["clientConfig"]["caBundle"] == "QUJD"
    selector = entry["namespaceSelector"]
    assert selector["matchLabels"] == {"guarded": "yes"}
    assert selector["matchExpressions"][0]["values"] == ["kube-system", "kube-node-lease", "guard"]
    users, groups = (c["expression"] for c in entry["matchConditions"])
    assert "['alice', 'o\\'brien']" in users
    assert "['ops\"team']" in groups


def test_no_exemptions_means_no_match_conditions_and_a_url_replaces_the_service() -> None:
    settings = load_settings(
        environ={"PRG_EXEMPT_USERS": "", "PRG_WEBHOOK_URL": "https://10.0.0.1:8443/validate"}
    )
    entry = webhook_entry(settings, "")
    assert "matchConditions" not in entry
    assert entry["clientConfig"] == {"url": "https://10.0.0.1:8443/validate", "caBundle": ""}


def test_the_digest_ignores_the_ca_bundle_only() -> None:
    settings = load_settings(environ={})
    one, two = webhook_entry(settings, "QQ=="), webhook_entry(settings, "Qg==")
    assert entry_digest(one) == entry_digest(two)
    other = webhook_entry(load_settings(environ={"PRG_TIMEOUT_SECONDS": "4"}), "QQ==")
    assert entry_digest(other) != entry_digest(one)


def test_the_canary_goes_where_the_entry_goes_and_refuses_nothing_it_cannot_reach() -> None:
    settings = load_settings(environ={"PRG_NAMESPACE": "guard"})
    entry, canary = webhook_entry(settings, "QQ=="), canary_entry(settings, "QQ==")
    token = canary_token(settings)
    assert canary["name"] == CANARY_NAME
    assert canary["failurePolicy"] == "Ignore"
    assert canary["rules"][0]["resources"] == ["configmaps"]
    assert canary["objectSelector"] == {"matchLabels": {CANARY_LABEL: "true"}}
    assert canary["namespaceSelector"]["matchExpressions"][0]["values"] == ["guard"]
    assert canary["clientConfig"]["service"] == {
        **entry["clientConfig"]["service"],
        "path": f"/validate/canary/{token}",
    }
    (condition,) = canary["matchConditions"]
    assert "request.dryRun" in condition["expression"]
    assert f"'{CANARY_ANNOTATION}' in object.metadata.annotations" in condition["expression"]
    # Beneath the entry's own path: a URL that misses the webhook's route misses the
    # canary's too (a bare host answered the canary and 404 on every pod update).
    for url, expected in [
        ("https://10.0.0.1:8443/validate", "https://10.0.0.1:8443/validate/canary/"),
        ("https://proxy.example/hooks/validate", "https://proxy.example/hooks/validate/canary/"),
        ("https://proxy.example", "https://proxy.example/canary/"),
        ("https://10.0.0.1:8443/validat", "https://10.0.0.1:8443/validat/canary/"),
    ]:
        by_url = load_settings(environ={"PRG_WEBHOOK_URL": url})
        assert canary_entry(by_url, "")["clientConfig"]["url"] == expected + canary_token(by_url)
    # The token names the target, not the bundle.
    moved = load_settings(environ={"PRG_NAMESPACE": "guard", "PRG_SERVICE": "moved"})
    assert canary_token(moved) != token
    # In URL mode the namespace changes only the canary's selector: the token too.
    by_url_env = {"PRG_WEBHOOK_URL": "https://10.0.0.1:8443/validate"}
    assert canary_token(
        load_settings(environ={**by_url_env, "PRG_NAMESPACE": "a"})
    ) != canary_token(load_settings(environ={**by_url_env, "PRG_NAMESPACE": "b"}))
    assert canary["timeoutSeconds"] == entry["timeoutSeconds"]
    assert canary_entry(settings, "Qg==")["clientConfig"]["service"]["path"].endswith(token)


NONCE = "0123456789abcdef"


def _review(dry_run: object, nonce: object = NONCE) -> dict[str, Any]:
    annotations = {} if nonce is None else {CANARY_ANNOTATION: nonce}
    request: dict[str, Any] = {
        "uid": "u-1",
        "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
        "resource": {"group": "", "version": "v1", "resource": "configmaps"},
        "operation": "UPDATE",
        "userInfo": {"username": "system:serviceaccount:guard:guard"},
        "object": {"metadata": {"annotations": annotations}},
        "oldObject": {},
    }
    if dry_run is not None:
        request["dryRun"] = dry_run
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def test_the_canary_refuses_the_controllers_probe_only() -> None:
    """Only a dry run carrying a nonce is refused (with the target's token and the
    nonce): Flux's and `kubectl diff`'s dry runs of the ConfigMap, which carry none,
    and every real update pass."""
    refused = answer_canary(_review(True), "feedc0de")["response"]
    assert (refused["uid"], refused["allowed"]) == ("u-1", False)
    assert refused["status"]["message"] == canary_message("feedc0de", NONCE)
    assert CANARY_MESSAGE in refused["status"]["message"]
    for dry_run, nonce, token in [
        (None, NONCE, "feedc0de"),
        (False, NONCE, "feedc0de"),
        ("true", NONCE, "feedc0de"),
        (True, None, "feedc0de"),  # a server-side dry-run apply of the manifest
        (True, "not hex, maybe a secret", "feedc0de"),
        (True, 12345678, "feedc0de"),
        (True, NONCE, "../../x"),
    ]:
        answer = answer_canary(_review(dry_run, nonce), token)["response"]
        assert answer["allowed"] is True, (dry_run, nonce, token)
    with pytest.raises(MalformedReview):
        answer_canary({"kind": "AdmissionReview"}, "feedc0de")


class MemoryCluster:
    def __init__(self) -> None:
        self.secret: dict[str, Any] | None = {"metadata": {"name": "certs"}, "type": "Opaque"}
        self.configuration: dict[str, Any] | None = {"metadata": {"name": "guard"}}
        self.writes = 0
        self.conflict_next = False
        # Whether the API server's calls reach the webhook (what a TLS probe from
        # inside the cluster cannot tell), and the dry runs sent.
        self.reaches_webhook = True
        self.dry_runs = 0
        self.stale_canary = False
        self.loaded_canary: dict[str, Any] | None = None

    def canary_refusal(self, namespace: str, name: str, nonce: str) -> str:
        """As an API server would answer: refused by the canary where it is loaded
        (stale_canary: as it was one write earlier) and the webhook is reachable."""
        self.dry_runs += 1
        seen = self.loaded_canary if self.stale_canary else _named_entry(self, CANARY_NAME)
        self.loaded_canary = _named_entry(self, CANARY_NAME)
        if seen is None or not self.reaches_webhook:
            return ""
        token = seen["clientConfig"]["service"]["path"].rsplit("/", 1)[1]
        return f'admission webhook "{CANARY_NAME}" denied the request: ' + canary_message(
            token, nonce
        )

    def read_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.secret)

    def replace_secret(self, namespace: str, name: str, body: dict[str, Any]) -> None:
        if self.conflict_next:
            self.conflict_next = False
            raise Conflict("changed")
        self.secret = copy.deepcopy(body)

    def read_webhook_configuration(self, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.configuration)

    def replace_webhook_configuration(self, name: str, body: dict[str, Any]) -> None:
        self.writes += 1
        self.configuration = copy.deepcopy(body)


def _named_entry(cluster: MemoryCluster, name: str) -> dict[str, Any] | None:
    return next((e for e in _entries(cluster) if e.get("name") == name), None)


def _controller(
    tmp_path: Path,
    cluster: MemoryCluster,
    answer: list[str],
    now: list[datetime.datetime],
    started: float = 0.0,
    **env: str,
) -> Controller:
    settings = load_settings(
        environ={
            "PRG_CERT_DIR": str(tmp_path / "certs"),
            "PRG_CERT_SECRET": "certs",
            "PRG_WEBHOOK_CONFIGURATION": "guard",
            "PRG_CA_LIFETIME": "6m",
            "PRG_CERT_LIFETIME": "3m",
            **env,
        }
    )
    return Controller(
        settings, cluster, clock=lambda: now[0], probe=lambda h, p, b: answer[0], started=started
    )


def _entries(cluster: MemoryCluster) -> list[dict[str, Any]]:
    assert cluster.configuration is not None
    return list(cluster.configuration.get("webhooks") or [])


def test_nothing_is_registered_until_the_service_answers(tmp_path: Path) -> None:
    cluster, answer = MemoryCluster(), ["pod-replace-guard.pod-replace-guard.svc:443 refused"]
    now = [datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)]
    controller = _controller(tmp_path, cluster, answer, now)
    for _ in range(3):
        controller.sync()
    assert _entries(cluster) == []
    assert (tmp_path / "certs" / "tls.crt").is_file()
    assert oct((tmp_path / "certs" / "tls.key").stat().st_mode & 0o777) == "0o600"
    answer[0] = ""
    controller.sync()
    (entry,) = _entries(cluster)
    assert entry["failurePolicy"] == "Fail"
    bundle = base64.b64decode(entry["clientConfig"]["caBundle"])
    assert bundle == (tmp_path / "certs" / "ca.crt").read_bytes()


def test_an_edit_of_the_live_entry_stays_until_the_settings_change(tmp_path: Path) -> None:
    cluster, answer = MemoryCluster(), [""]
    now = [datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)]
    _controller(tmp_path, cluster, answer, now).sync()
    assert cluster.configuration is not None
    cluster.configuration["webhooks"][0]["failurePolicy"] = "Ignore"  # break glass
    writes = cluster.writes
    _controller(tmp_path, cluster, answer, now).sync()
    assert _entries(cluster)[0]["failurePolicy"] == "Ignore"
    assert cluster.writes == writes
    _controller(tmp_path, cluster, answer, now, PRG_TIMEOUT_SECONDS="5").sync()
    (entry,) = _entries(cluster)
    assert (entry["failurePolicy"], entry["timeoutSeconds"]) == ("Fail", 5)
    annotations = cluster.configuration["metadata"]["annotations"]
    assert annotations[DIGEST_ANNOTATION] == entry_digest(entry)


def test_other_entries_of_the_configuration_are_kept(tmp_path: Path) -> None:
    cluster = MemoryCluster()
    assert cluster.configuration is not None
    cluster.configuration["webhooks"] = [{"name": "other.example.com", "sideEffects": "None"}]
    now = [datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)]
    _controller(tmp_path, cluster, [""], now).sync()
    assert [e["name"] for e in _entries(cluster)] == [WEBHOOK_NAME, "other.example.com"]


CANARY_CONFIGMAP = "guard-canary"


def test_nothing_is_registered_until_the_api_server_reaches_the_webhook(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The Service answers TLS from inside the cluster, but the API server's calls do
    not get through (a NetworkPolicy, a client certificate the webhook refuses): the
    pods entry is never registered, so no update is refused for want of an answer."""
    cluster = MemoryCluster()
    cluster.reaches_webhook = False
    now = [datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)]
    controller = _controller(tmp_path, cluster, [""], now, PRG_CANARY_CONFIGMAP=CANARY_CONFIGMAP)
    with caplog.at_level("WARNING", logger="pod_replace_guard.controller"):
        for _ in range(5):
            controller.sync()
            now[0] += datetime.timedelta(seconds=5)
    assert [e["name"] for e in _entries(cluster)] == [CANARY_NAME]
    assert cluster.writes == 1  # the canary entry, once
    assert cluster.dry_runs == 4
    # First taken for an API server that has not loaded the entry yet, then said.
    quiet, loud = [r.getMessage() for r in caplog.records]
    assert "has not sent the canary's dry run" in quiet
    assert "the API server did not reach the webhook" in loud
    cluster.reaches_webhook = True
    controller.sync()
    assert [e["name"] for e in _entries(cluster)] == [WEBHOOK_NAME, CANARY_NAME]
    assert _entries(cluster)[0]["failurePolicy"] == "Fail"
    writes = cluster.writes
    for _ in range(3):
        controller.sync()
    assert (cluster.writes, cluster.dry_runs) == (writes, 5)  # registered: no more dry runs


def test_a_new_target_waits_for_the_canary_and_the_canary_follows_the_bundle(
    tmp_path: Path,
) -> None:
    cluster = MemoryCluster()
    now = [datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)]
    for _ in range(2):
        _controller(tmp_path, cluster, [""], now, PRG_CANARY_CONFIGMAP=CANARY_CONFIGMAP).sync()
    entry, canary = _entries(cluster)
    assert entry["clientConfig"]["service"]["name"] == "pod-replace-guard"
    cluster.reaches_webhook = False
    moved = _controller(
        tmp_path,
        cluster,
        [""],
        now,
        started=1.0,
        PRG_SERVICE="moved",
        PRG_CANARY_CONFIGMAP=CANARY_CONFIGMAP,
    )
    for _ in range(3):
        moved.sync()
    entry, canary = _entries(cluster)
    assert entry["clientConfig"]["service"]["name"] == "pod-replace-guard"  # not moved
    assert canary["clientConfig"]["service"]["name"] == "moved"
    cluster.reaches_webhook = True
    moved.sync()
    entry, canary = _entries(cluster)
    assert entry["clientConfig"]["service"]["name"] == "moved"
    # A CA renewal reaches both entries.
    for _ in range(40):
        now[0] += datetime.timedelta(seconds=10)
        moved.sync()
    entry, canary = _entries(cluster)
    assert entry["clientConfig"]["caBundle"] == canary["clientConfig"]["caBundle"]


def test_the_ca_bundle_follows_a_ca_renewal(tmp_path: Path) -> None:
    cluster = MemoryCluster()
    now = [datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)]
    controller = _controller(tmp_path, cluster, [""], now)
    bundles = set()
    for _ in range(60):  # 10 minutes of 10-second syncs
        now[0] += datetime.timedelta(seconds=10)
        controller.sync()
        bundles.add(_entries(cluster)[0]["clientConfig"]["caBundle"])
        served = (tmp_path / "certs" / "tls.crt").read_bytes()
        assert served == base64.b64decode(cluster.secret["data"]["tls.crt"])  # type: ignore[index]
    assert len(bundles) >= 3


def test_a_conflict_leaves_the_files_alone(tmp_path: Path) -> None:
    cluster = MemoryCluster()
    cluster.conflict_next = True
    now = [datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)]
    with pytest.raises(Conflict):
        _controller(tmp_path, cluster, [""], now).sync()
    assert not (tmp_path / "certs" / "tls.crt").exists()


def test_missing_objects_are_named(tmp_path: Path) -> None:
    cluster = MemoryCluster()
    cluster.secret = None
    now = [datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)]
    with pytest.raises(ControllerError, match="Secret pod-replace-guard/certs does not exist"):
        _controller(tmp_path, cluster, [""], now).sync()
    cluster = MemoryCluster()
    cluster.configuration = None
    with pytest.raises(ControllerError, match="ValidatingWebhookConfiguration guard does not"):
        _controller(tmp_path, cluster, [""], now).sync()


def test_no_key_material_reaches_the_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cluster = MemoryCluster()
    now = [datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)]
    _controller(tmp_path, cluster, [""], now).sync()
    text = json.dumps([r.__dict__ for r in caplog.records], default=str)
    assert "PRIVATE KEY" not in text
    assert "BEGIN CERTIFICATE" not in text


def test_one_damaged_field_of_the_secret_does_not_cost_the_ca(tmp_path: Path) -> None:
    """Bad base64 in one key (tls.key) made the controller drop every field, so it
    made a new CA and served a certificate the published bundle did not trust."""
    cluster = MemoryCluster()
    now = [datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)]
    controller = _controller(tmp_path, cluster, [""], now)
    controller.sync()
    assert cluster.secret is not None
    ca = cluster.secret["data"]["ca.crt"]
    cluster.secret["data"]["tls.key"] = "not*base64="
    # Past PROPAGATION_GRACE of the (new) CA: the replacement certificate may be served.
    now[0] += datetime.timedelta(seconds=20)
    controller.sync()
    assert cluster.secret["data"]["ca.crt"] == ca
    served = (tmp_path / "certs" / "tls.crt").read_bytes()
    published = base64.b64decode(_entries(cluster)[0]["clientConfig"]["caBundle"])
    assert base64.b64decode(ca) in published
    assert served == base64.b64decode(cluster.secret["data"]["tls.crt"])


@pytest.mark.parametrize(
    ("url", "dns", "ip"),
    [
        ("https://guard.example.com:8443/validate", "guard.example.com", None),
        ("https://10.1.2.3/validate", None, "10.1.2.3"),
        ("https://[fd00::7]:8443/validate", None, "fd00::7"),
    ],
)
def test_the_serving_certificate_names_the_host_of_the_url(
    tmp_path: Path, url: str, dns: str | None, ip: str | None
) -> None:
    """With PRG_WEBHOOK_URL the API server (and the probe) check the certificate
    against the URL's host: a certificate without it never registers."""
    from cryptography import x509

    cluster = MemoryCluster()
    now = [datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)]
    _controller(tmp_path, cluster, [""], now, PRG_WEBHOOK_URL=url).sync()
    cert = x509.load_pem_x509_certificate((tmp_path / "certs" / "tls.crt").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    if dns:
        assert dns in sans.get_values_for_type(x509.DNSName)
    if ip:
        assert ip in [str(a) for a in sans.get_values_for_type(x509.IPAddress)]
    # And it stays: the next sync does not reissue it.
    before = (tmp_path / "certs" / "tls.crt").read_bytes()
    now[0] += datetime.timedelta(seconds=10)
    _controller(tmp_path, cluster, [""], now, PRG_WEBHOOK_URL=url).sync()
    assert (tmp_path / "certs" / "tls.crt").read_bytes() == before


class _Ticks:
    """A stop event for Controller.run whose wait returns at once, stopping after n."""

    def __init__(self, n: int) -> None:
        self.n = n

    def is_set(self) -> bool:
        return self.n <= 0

    def wait(self, timeout: float | None = None) -> bool:
        self.n -= 1
        return self.n <= 0


def test_a_second_outage_is_logged_too(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A failure is logged once while it lasts, and again when it comes back after
    syncs that worked (the controller remembered the last reason for ever)."""
    cluster = MemoryCluster()
    now = [datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)]
    controller = _controller(tmp_path, cluster, [""], now)
    # Registered first, so the syncs that work in between write nothing.
    schedule = iter([False, True, True, False, False, True, True])
    read = cluster.read_webhook_configuration

    def flaky(name: str) -> dict[str, Any] | None:
        if next(schedule):
            raise ControllerError("the API server answered 503 Service Unavailable")
        return read(name)

    cluster.read_webhook_configuration = flaky  # type: ignore[method-assign]
    with caplog.at_level("WARNING", logger="pod_replace_guard.controller"):
        controller.run(_Ticks(7), ())  # type: ignore[arg-type]
    failures = [r for r in caplog.records if "503" in r.getMessage()]
    assert len(failures) == 2


def test_a_platform_extending_the_canarys_selector_is_not_fought(tmp_path: Path) -> None:
    """AKS's admissions enforcer adds its own namespaceSelector expressions to every
    entry: comparing the whole entry rewrote the canary on every pass, and the dry run
    (so the registration) never came."""
    cluster = MemoryCluster()
    cluster.reaches_webhook = False
    now = [datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)]
    controller = _controller(tmp_path, cluster, [""], now, PRG_CANARY_CONFIGMAP=CANARY_CONFIGMAP)
    controller.sync()
    canary = _named_entry(cluster, CANARY_NAME)
    assert canary is not None
    canary["namespaceSelector"]["matchExpressions"].append(
        {"key": "control-plane", "operator": "DoesNotExist"}
    )
    cluster.reaches_webhook = True
    controller.sync()
    assert [e["name"] for e in _entries(cluster)] == [WEBHOOK_NAME, CANARY_NAME]
    assert cluster.writes == 2  # the canary once, then the entry


def test_a_stale_canary_does_not_approve_a_new_target(tmp_path: Path) -> None:
    """An API server still holding the canary's previous target (several API servers,
    each loading the configuration in its own time) answers from the old target: its
    answer names another target, so the move waits."""
    cluster = MemoryCluster()
    now = [datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)]
    for _ in range(2):
        _controller(tmp_path, cluster, [""], now, PRG_CANARY_CONFIGMAP=CANARY_CONFIGMAP).sync()
    cluster.stale_canary = True
    cluster.loaded_canary = _named_entry(cluster, CANARY_NAME)
    moved = _controller(
        tmp_path, cluster, [""], now, started=1.0,
        PRG_SERVICE="moved", PRG_CANARY_CONFIGMAP=CANARY_CONFIGMAP,
    )  # fmt: skip
    moved.sync()  # writes the canary for the new target
    moved.sync()  # the dry run reaches the old target's canary
    entry = _named_entry(cluster, WEBHOOK_NAME)
    assert entry is not None
    assert entry["clientConfig"]["service"]["name"] == "pod-replace-guard"
    moved.sync()  # now loaded: approved
    entry = _named_entry(cluster, WEBHOOK_NAME)
    assert entry is not None
    assert entry["clientConfig"]["service"]["name"] == "moved"


def test_certificates_are_renewed_while_a_move_waits_on_a_broken_canary(tmp_path: Path) -> None:
    """Registration failing (the canary's ConfigMap deleted, a write refused) must not
    stop the served certificate from being renewed: it expired under a Fail entry."""
    cluster = MemoryCluster()
    now = [datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)]
    for _ in range(2):
        _controller(tmp_path, cluster, [""], now, PRG_CANARY_CONFIGMAP=CANARY_CONFIGMAP).sync()
    cluster.canary_refusal = lambda *args: "ConfigMap pod-replace-guard/guard-canary does not exist"  # type: ignore[method-assign]
    moved = _controller(
        tmp_path, cluster, [""], now, started=1.0,
        PRG_SERVICE="moved", PRG_CANARY_CONFIGMAP=CANARY_CONFIGMAP,
    )  # fmt: skip
    replace = cluster.replace_webhook_configuration
    refuse = iter([False, True] * 100)

    def sometimes_refused(name: str, body: dict[str, Any]) -> None:
        if next(refuse):
            raise ControllerError("the API server answered 500 Internal Server Error")
        replace(name, body)

    cluster.replace_webhook_configuration = sometimes_refused  # type: ignore[method-assign]
    for _ in range(60):  # 10 minutes: several 3-minute certificates
        now[0] += datetime.timedelta(seconds=10)
        with contextlib.suppress(ControllerError, Conflict):
            moved.sync()
    from cryptography import x509

    served = x509.load_pem_x509_certificate((tmp_path / "certs" / "tls.crt").read_bytes())
    assert served.not_valid_after_utc > now[0]
    entry = _named_entry(cluster, WEBHOOK_NAME)
    assert entry is not None
    assert entry["clientConfig"]["service"]["name"] == "pod-replace-guard"  # never moved


def test_an_unexpected_error_does_not_stop_the_loop(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Only ControllerError and the transport's errors were caught: anything else (a
    bug, an answer of a shape no one foresaw) ended the controller."""
    cluster = MemoryCluster()
    now = [datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)]
    controller = _controller(tmp_path, cluster, [""], now)
    schedule = iter([True, True, False])
    read = cluster.read_webhook_configuration

    def broken(name: str) -> dict[str, Any] | None:
        if next(schedule):
            raise KeyError("metadata")
        return read(name)

    cluster.read_webhook_configuration = broken  # type: ignore[method-assign]
    with caplog.at_level("WARNING", logger="pod_replace_guard.controller"):
        controller.run(_Ticks(3), ())  # type: ignore[arg-type]
    assert [e["name"] for e in _entries(cluster)] == [WEBHOOK_NAME]
    unexpected = [r for r in caplog.records if r.getMessage() == "sync failed unexpectedly"]
    assert len(unexpected) == 1  # once while it lasts


# CEL string literals (cel-spec, langdef.md "String and Bytes Values"): the escapes
# below, and a \u or \U escape must name a Unicode scalar value (cel-go refuses a
# surrogate: "invalid unicode code point"). No raw newline, carriage return, quote or
# backslash.
_CEL_SIMPLE = {
    "\\": "\\",
    '"': '"',
    "'": "'",
    "`": "`",
    "?": "?",
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
}


def _cel_unquote(literal: str) -> str:
    assert literal[0] == literal[-1] == "'", literal
    body, out, i = literal[1:-1], [], 0
    while i < len(body):
        ch = body[i]
        assert ch not in "'\n\r", f"raw {ch!r} in a CEL string"
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        kind = body[i + 1]
        if kind in _CEL_SIMPLE:
            out.append(_CEL_SIMPLE[kind])
            i += 2
            continue
        width = {"x": 2, "X": 2, "u": 4, "U": 8}.get(kind)
        if width is not None:
            digits = body[i + 2 : i + 2 + width]
            assert len(digits) == width
            assert all(c in "0123456789abcdefABCDEF" for c in digits)
            code = int(digits, 16)
            i += 2 + width
        else:
            digits = body[i + 1 : i + 4]
            assert len(digits) == 3
            assert digits[0] in "0123"
            assert all(c in "01234567" for c in digits)
            code = int(digits, 8)
            i += 4
        assert code <= 0x10FFFF
        assert not 0xD800 <= code <= 0xDFFF, f"a surrogate {code:x} is no code point"
        out.append(chr(code))
    return "".join(out)


def _cel_literals(expression: str) -> list[str]:
    import re

    listed = expression[expression.index(" in [") + 4 :]
    literals = re.findall(r"'(?:[^'\\]|\\.)*'", listed)
    return [_cel_unquote(literal) for literal in literals]


HOSTILE_NAMES = [
    "o'brien",
    'ops"team',
    "back\\slash",
    "new\nline",
    "tab\tcr\rx",
    "a/b",
    "caf\u00e9",
    "line\u2028separator",
    "emoji-\U0001f600",
    "\U0010ffff-last",
    "del\x7f",
    "nul\x00",
    '"] || true || ["',
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_exempt_names_are_valid_cel_string_literals(name: str) -> None:
    """json.dumps wrote a character beyond the BMP as a UTF-16 surrogate pair
    ("\\ud83d\\ude00"): CEL has no surrogates, so the API server refused the whole
    configuration and the entry was never registered."""
    settings = load_settings(
        overrides={"exempt_users": ["alice", name], "exempt_groups": [name, "ops"]}
    )
    users, groups = (c["expression"] for c in webhook_entry(settings, "")["matchConditions"])
    assert _cel_literals(users) == ["alice", name]
    assert _cel_literals(groups) == [name, "ops"]


def _tls_listener(
    tmp_path: Path, names: list[str]
) -> tuple[Any, bytes, Any]:  # (listening socket, CA PEM, server SSLContext)
    import socket
    import ssl

    from webhook.certs import write_certificates

    issued = write_certificates(tmp_path / "probe", names[0], "ns", hosts=names[1:])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(issued.out_dir / "tls.crt", issued.out_dir / "tls.key")
    listener = socket.create_server(("127.0.0.1", 0))
    return listener, (issued.out_dir / "ca.crt").read_bytes(), context


def _serve_once(listener: Any, handle: Any) -> None:
    import threading

    def run() -> None:
        conn, _ = listener.accept()
        try:
            handle(conn)
        except OSError:
            pass
        finally:
            conn.close()

    threading.Thread(target=run, daemon=True).start()


def test_the_probe_accepts_a_trusted_certificate_and_names_a_wrong_host(tmp_path: Path) -> None:
    from webhook.controller import serves_trusted_certificate

    listener, ca, context = _tls_listener(tmp_path, ["guard"])
    port = listener.getsockname()[1]

    def handshake(conn: Any) -> None:
        with context.wrap_socket(conn, server_side=True) as tls:
            tls.recv(1)

    _serve_once(listener, handshake)
    assert serves_trusted_certificate("localhost", port, ca) == ""
    _serve_once(listener, handshake)
    why = serves_trusted_certificate("127.0.0.2", port, ca)
    assert "does not trust" in why or "does not answer" in why
    other_ca = write_certificates_ca(tmp_path / "other")
    _serve_once(listener, handshake)
    assert "does not trust" in serves_trusted_certificate("localhost", port, other_ca)
    listener.close()


def write_certificates_ca(directory: Path) -> bytes:
    from webhook.certs import write_certificates

    return (write_certificates(directory, "x", "ns").out_dir / "ca.crt").read_bytes()


@pytest.mark.parametrize("trickle", [False, True])
def test_the_probe_gives_up_in_bounded_time(tmp_path: Path, trickle: bool) -> None:
    """A listener that accepts TCP and never completes a handshake: silent, or sending
    a TLS record header for 16 KiB and then a byte a second (each read succeeds, so
    a per-read timeout never fires): the sync must not hang on it."""
    import time

    from webhook.controller import PROBE_TIMEOUT_SECONDS, serves_trusted_certificate

    listener, ca, _ = _tls_listener(tmp_path, ["guard"])
    port = listener.getsockname()[1]

    def slow(conn: Any) -> None:
        conn.recv(4096)
        if trickle:
            conn.sendall(b"\x16\x03\x03\x40\x00")
        for _ in range(60):
            if trickle:
                conn.sendall(b"\x00")
            time.sleep(0.5)

    _serve_once(listener, slow)
    started = time.monotonic()
    why = serves_trusted_certificate("localhost", port, ca)
    elapsed = time.monotonic() - started
    assert "does not answer TLS" in why
    assert elapsed < PROBE_TIMEOUT_SECONDS + 1.5, elapsed
    listener.close()


def test_a_new_target_is_probed_before_the_entry_points_at_it(tmp_path: Path) -> None:
    """An upgrade that changes where the webhook is called (another Service, a wrong
    URL) rewrote the entry at once: under failurePolicy Fail a target that does not
    answer refuses every pod update, which is what the first registration's probe
    exists to prevent."""
    cluster, answer = MemoryCluster(), [""]
    now = [datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)]
    _controller(tmp_path, cluster, answer, now).sync()
    answer[0] = "guard-v2.pod-replace-guard.svc:443 does not answer TLS"
    moved = _controller(tmp_path, cluster, answer, now, PRG_SERVICE="guard-v2")
    moved.sync()
    (entry,) = _entries(cluster)
    assert entry["clientConfig"]["service"]["name"] == "pod-replace-guard"
    answer[0] = ""
    moved.sync()
    (entry,) = _entries(cluster)
    assert entry["clientConfig"]["service"]["name"] == "guard-v2"
    # A change that keeps the target (the timeout) needs no probe.
    answer[0] = "down"
    _controller(
        tmp_path, cluster, answer, now, PRG_SERVICE="guard-v2", PRG_TIMEOUT_SECONDS="7"
    ).sync()
    assert _entries(cluster)[0]["timeoutSeconds"] == 7


def test_the_ca_bundle_is_kept_current_while_a_new_target_does_not_answer(
    tmp_path: Path,
) -> None:
    cluster, answer = MemoryCluster(), [""]
    now = [datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)]
    _controller(tmp_path, cluster, answer, now).sync()
    assert cluster.configuration is not None
    digest = cluster.configuration["metadata"]["annotations"][DIGEST_ANNOTATION]
    answer[0] = "down"
    moved = _controller(tmp_path, cluster, answer, now, PRG_SERVICE="guard-v2")
    for _ in range(60):  # 10 minutes of 6-minute CAs
        now[0] += datetime.timedelta(seconds=10)
        moved.sync()
        (entry,) = _entries(cluster)
        assert entry["clientConfig"]["service"]["name"] == "pod-replace-guard"
        published = base64.b64decode(entry["clientConfig"]["caBundle"])
        served = (tmp_path / "certs" / "tls.crt").read_bytes()
        assert _verifies(published, served), now[0]
    assert cluster.configuration["metadata"]["annotations"][DIGEST_ANNOTATION] == digest


def _verifies(bundle: bytes, pem: bytes) -> bool:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(pem)
    for ca in x509.load_pem_x509_certificates(bundle):
        try:
            cert.verify_directly_issued_by(ca)
        except Exception:
            continue
        return True
    return False


class _VersionedCluster:
    """The API server's optimistic concurrency: a write of an object read before the
    last write is a Conflict. Every call is a point where another replica may run."""

    def __init__(self, turn: Any) -> None:
        self.turn = turn
        self.objects: dict[str, dict[str, Any]] = {
            "secret": {"metadata": {"name": "certs", "resourceVersion": "1"}},
            "configuration": {"metadata": {"name": "guard", "resourceVersion": "1"}},
        }
        self.history: list[tuple[datetime.datetime, bytes]] = []

    def _read(self, kind: str) -> dict[str, Any]:
        self.turn()
        return copy.deepcopy(self.objects[kind])

    def _write(self, kind: str, body: dict[str, Any]) -> None:
        self.turn()
        current = self.objects[kind]["metadata"]["resourceVersion"]
        if body["metadata"].get("resourceVersion") != current:
            raise Conflict(kind)
        body = copy.deepcopy(body)
        body["metadata"]["resourceVersion"] = str(int(current) + 1)
        self.objects[kind] = body

    def read_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._read("secret")

    def replace_secret(self, namespace: str, name: str, body: dict[str, Any]) -> None:
        self._write("secret", body)

    def read_webhook_configuration(self, name: str) -> dict[str, Any] | None:
        return self._read("configuration")

    def replace_webhook_configuration(self, name: str, body: dict[str, Any]) -> None:
        self._write("configuration", body)

    def published(self) -> bytes | None:
        for entry in self.objects["configuration"].get("webhooks") or []:
            return base64.b64decode(entry["clientConfig"]["caBundle"])
        return None


@pytest.mark.parametrize("seed", range(6))
def test_racing_replicas_never_serve_a_certificate_the_api_server_does_not_trust(
    tmp_path: Path, seed: int
) -> None:
    """Three replicas' controllers on one Secret and one configuration, their calls
    interleaved at random, the clock moving on: each replica's served certificate is
    always trusted by the caBundle as the API server saw it 5 s ago
    and as it is now."""
    import random
    import threading

    # How late the API server sees a caBundle: well under PROPAGATION_GRACE (15 s).
    lag = datetime.timedelta(seconds=5)
    rng = random.Random(seed)
    now = [datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)]
    lock = threading.Condition()
    state: dict[str, Any] = {"running": None, "waiting": set()}

    def turn() -> None:
        me = threading.current_thread().name
        with lock:
            state["running"] = None
            state["waiting"].add(me)
            lock.notify_all()
            lock.wait_for(lambda: state["running"] == me)
            state["waiting"].discard(me)

    cluster = _VersionedCluster(turn)
    replicas = [f"r{i}" for i in range(3)]
    controllers = {
        r: _controller(tmp_path / r, cluster, [""], now, PRG_SYNC_SECONDS="1")  # type: ignore[arg-type]
        for r in replicas
    }
    done: set[str] = set()

    def loop(name: str) -> None:
        for _ in range(150):
            with contextlib.suppress(Conflict):
                controllers[name].sync()
        with lock:
            done.add(name)
            state["running"] = None
            lock.notify_all()

    threads = [threading.Thread(target=loop, args=(r,), name=r, daemon=True) for r in replicas]
    for thread in threads:
        thread.start()
    seen: list[tuple[datetime.datetime, bytes | None]] = []
    cas: set[str | None] = set()
    while True:
        with lock:
            lock.wait_for(
                lambda: (
                    state["running"] is None and len(state["waiting"]) + len(done) == len(replicas)
                )
            )
            if len(done) == len(replicas):
                break
            now[0] += datetime.timedelta(seconds=rng.choice([0, 0, 0, 1, 2]))
            published = cluster.published()
            seen.append((now[0], published))
            cas.add((cluster.objects["secret"].get("data") or {}).get("ca.crt"))
            lagging = next((b for t, b in reversed(seen) if now[0] - t >= lag), None)
            for r in replicas:
                served = tmp_path / r / "certs" / "tls.crt"
                if published is not None and served.exists():
                    pem = served.read_bytes()
                    assert _verifies(published, pem), (r, now[0])
                    if lagging is not None:
                        assert _verifies(lagging, pem), (r, now[0], "lagging")
            state["running"] = rng.choice(sorted(state["waiting"]))
            lock.notify_all()
    for thread in threads:
        thread.join()
    assert len(cas - {None}) >= 3, "the CA was not renewed twice"


def test_a_wiped_secret_keeps_serving_the_old_certificate_until_the_new_ca_is_published(
    tmp_path: Path,
) -> None:
    from cryptography import x509

    cluster = MemoryCluster()
    now = [datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)]
    controller = _controller(tmp_path, cluster, [""], now)
    controller.sync()
    old_cert = (tmp_path / "certs" / "tls.crt").read_bytes()
    assert cluster.secret is not None
    cluster.secret["data"] = {}  # an operator (or a restore) empties the Secret
    now[0] += datetime.timedelta(seconds=5)
    controller.sync()
    bundle = base64.b64decode(_entries(cluster)[0]["clientConfig"]["caBundle"])
    published = x509.load_pem_x509_certificates(bundle)
    assert len(published) == 2, "the old CA stays trusted beside the new one"
    assert (tmp_path / "certs" / "tls.crt").read_bytes() == old_cert, "served before published"
    now[0] += datetime.timedelta(seconds=20)
    controller.sync()
    new_cert = (tmp_path / "certs" / "tls.crt").read_bytes()
    assert new_cert != old_cert
    assert new_cert == base64.b64decode(cluster.secret["data"]["tls.crt"])


def test_a_shortened_lifetime_renews_the_certificates(tmp_path: Path) -> None:
    from cryptography import x509

    cluster = MemoryCluster()
    now = [datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)]
    _controller(
        tmp_path, cluster, [""], now, PRG_CA_LIFETIME="730d", PRG_CERT_LIFETIME="90d"
    ).sync()
    short = _controller(tmp_path, cluster, [""], now)  # 6-minute CA, 3-minute certificate
    for _ in range(6):
        now[0] += datetime.timedelta(seconds=10)
        short.sync()
    served = x509.load_pem_x509_certificate((tmp_path / "certs" / "tls.crt").read_bytes())
    life = served.not_valid_after_utc - served.not_valid_before_utc
    assert life < datetime.timedelta(minutes=10)


def test_replicas_of_the_old_settings_do_not_put_their_entry_back(tmp_path: Path) -> None:
    """A rollout: the old replicas (started earlier) keep syncing beside the new ones."""
    cluster = MemoryCluster()
    now = [datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)]
    old = _controller(tmp_path / "old", cluster, [""], now, started=100.0)
    old.sync()
    new = _controller(tmp_path / "new", cluster, [""], now, started=200.0, PRG_TIMEOUT_SECONDS="7")
    for _ in range(3):
        new.sync()
        old.sync()
        assert _entries(cluster)[0]["timeoutSeconds"] == 7
    # A rollback is a newer rollout of the old settings: it wins again.
    _controller(tmp_path / "back", cluster, [""], now, started=300.0).sync()
    assert _entries(cluster)[0]["timeoutSeconds"] == 3


def test_cel_strings_escape_quotes_backslashes_and_control_characters() -> None:
    from webhook.registration import cel_string

    assert cel_string("plain") == "'plain'"
    assert cel_string("o'brien") == "'o\\'brien'"
    assert cel_string("back\\slash") == "'back\\\\slash'"
    assert cel_string("new\nline") == "'new\\nline'"
    assert cel_string("emoji-\U0001f600") == "'emoji-\\U0001f600'"


def test_with_certificates_from_files_only_the_bundle_is_registered(tmp_path: Path) -> None:
    """cert-manager or your own Secret: no Secret is written, the mounted ca.crt is
    the caBundle, and a missing one is named."""
    from webhook.certs import write_certificates

    cluster = MemoryCluster()
    now = [datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)]
    controller = _controller(tmp_path, cluster, [""], now, PRG_CERT_SECRET="")
    with pytest.raises(ControllerError, match="PRG_CA_FILE"):
        controller.sync()
    write_certificates(tmp_path / "certs", "pod-replace-guard", "pod-replace-guard")
    served = (tmp_path / "certs" / "tls.crt").read_bytes()
    controller.sync()
    bundle = _entries(cluster)[0]["clientConfig"]["caBundle"]
    assert base64.b64decode(bundle) == (tmp_path / "certs" / "ca.crt").read_bytes()
    assert cluster.secret == {"metadata": {"name": "certs"}, "type": "Opaque"}
    assert (tmp_path / "certs" / "tls.crt").read_bytes() == served


def test_the_probe_refuses_a_certificate_with_only_a_common_name(tmp_path: Path) -> None:
    """Go (the API server) ignores the common name; Python checked it by default, so a
    CN-only certificate (an existingSecret, say) registered and every call failed."""
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from webhook.certs import key_pem, make_ca
    from webhook.controller import serves_trusted_certificate

    ca_key, ca_cert = make_ca("test CA", datetime.timedelta(days=1))
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .sign(ca_key, hashes.SHA256())
    )
    (tmp_path / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "tls.key").write_bytes(key_pem(key))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    import socket

    listener = socket.create_server(("127.0.0.1", 0))

    def handshake(conn: Any) -> None:
        with context.wrap_socket(conn, server_side=True) as tls:
            tls.recv(1)

    _serve_once(listener, handshake)
    bundle = ca_cert.public_bytes(serialization.Encoding.PEM)
    why = serves_trusted_certificate("localhost", listener.getsockname()[1], bundle)
    listener.close()
    assert "does not trust" in why
