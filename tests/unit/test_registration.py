"""The registered entry (webhook.registration) and the controller's decisions
(webhook.controller) with an in-memory cluster; the real API server is in
tests/e2e/test_controller.py."""

from __future__ import annotations

import base64
import copy
import datetime
import json
from pathlib import Path
from typing import Any

import pytest

from webhook.controller import Conflict, Controller, ControllerError
from webhook.registration import DIGEST_ANNOTATION, WEBHOOK_NAME, entry_digest, webhook_entry
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


class MemoryCluster:
    def __init__(self) -> None:
        self.secret: dict[str, Any] | None = {"metadata": {"name": "certs"}, "type": "Opaque"}
        self.configuration: dict[str, Any] | None = {"metadata": {"name": "guard"}}
        self.writes = 0
        self.conflict_next = False

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
    assert [e["name"] for e in _entries(cluster)] == ["other.example.com", WEBHOOK_NAME]


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
    assert cel_string("new\nline") == "'new\\x0aline'"


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
