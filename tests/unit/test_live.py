"""webhook/live.py: which layer refused a dry-run replacement, from the API server's
Status (the shapes below are what kube-apiserver answers; tests/e2e/test_check_live.py
meets them for real)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from webhook.live import WEBHOOK_NAME, DryRun, LiveError, PodChanged, refusal


def status(code: int, reason: str, message: str, fields: list[str] | None = None) -> str:
    body: dict[str, Any] = {"kind": "Status", "code": code, "reason": reason, "message": message}
    if fields is not None:
        body["details"] = {
            "causes": [{"field": f, "reason": "FieldValueForbidden"} for f in fields]
        }
    return json.dumps(body)


REFUSALS = [
    (
        "the API server's validation",
        422,
        status(
            422, "Invalid", 'Pod "p" is invalid: spec.tolerations: Forbidden', ["spec.tolerations"]
        ),
        DryRun(None, "api-server", "", ["spec.tolerations"]),
    ),
    (
        "our webhook",
        403,
        status(
            403,
            "Forbidden",
            f'admission webhook "{WEBHOOK_NAME}" denied the request: pod updates may not ...',
            ["metadata.finalizers"],
        ),
        DryRun(None, "admission-webhook", WEBHOOK_NAME, ["metadata.finalizers"]),
    ),
    (
        "a policy",
        422,
        status(
            422,
            "Invalid",
            "ValidatingAdmissionPolicy 'pod-replace-guard' with binding 'b' denied request: x",
        ),
        DryRun(None, "admission-policy", "pod-replace-guard", []),
    ),
]


@pytest.mark.parametrize(("name", "code", "body", "want"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refusals_name_their_layer(name: str, code: int, body: str, want: DryRun) -> None:
    assert refusal(code, body, "p") == want


@pytest.mark.parametrize(
    ("code", "body", "said"),
    [
        (404, status(404, "NotFound", 'pods "p" not found'), "404 NotFound"),
        (
            500,
            status(500, "InternalError", 'failed calling webhook "x": connection refused'),
            "could not be called",
        ),
        (502, "<html>bad gateway</html>", "502"),
    ],
)
def test_answers_that_are_no_verdict_are_errors(code: int, body: str, said: str) -> None:
    with pytest.raises(LiveError, match=said):
        refusal(code, body, "p")


def test_a_conflict_is_the_pod_changing_not_a_verdict() -> None:
    body = status(409, "Conflict", 'Operation cannot be fulfilled on pods "p": modified')
    with pytest.raises(PodChanged, match="pod p has changed"):
        refusal(409, body, "p")


def test_messages_are_not_kept_as_they_can_quote_values() -> None:
    body = status(
        422, "Invalid", 'Pod "p" is invalid: spec: Forbidden: {"Env": "s3cr3t"}', ["spec"]
    )
    assert "s3cr3t" not in repr(refusal(422, body, "p"))


def test_live_without_the_kubernetes_client_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['kubernetes'] = None\n"
        "from webhook.cli import main\n"
        "sys.exit(main(['check', '--live', '--new', '-'], stdin=__import__('io').StringIO("
        '\'{"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "p"}}\')))'
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert "pip install 'pod-replace-guard[live]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_request_is_limited_in_all_not_only_per_read() -> None:
    """A server that sends its headers, then one byte every 0.1 s: each read is quick, so
    only a limit on the whole request ends it (it would take 100 s)."""
    import socket
    import threading
    import time

    import urllib3

    from webhook.live import time_limit

    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def trickle() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
            while not stop.wait(0.1):
                connection.sendall(b"x")

    threading.Thread(target=trickle, daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/api/v1/namespaces/d/pods/p"
    started = time.monotonic()
    try:
        with (
            pytest.raises(LiveError, match=r"no complete answer within 0\.5 s"),
            time_limit(0.5, "reading pod d/p"),
        ):
            urllib3.PoolManager().request("GET", url, timeout=5.0)
    finally:
        stop.set()
        listener.close()
    assert time.monotonic() - started < 3
