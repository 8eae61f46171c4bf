"""The README's sample AdmissionReview is what the app really answers.

The request of README.md's "A review, in and out" is posted through Flask's test
client to the app ``create_app`` builds with the default settings; its answer must be
the response shown, and the variant the README describes (a finalizer added) must get
the denial shown, byte for byte once parsed.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from webhook.app import create_app
from webhook.settings import MULTIPROC_ENV, Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


@pytest.fixture(autouse=True)
def _single_process_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)


def samples() -> list[Any]:
    section = README.split("### A review, in and out", 1)[1].split("\n## ", 1)[0]
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)\n```", section, re.S)]


def answer(review: dict[str, Any]) -> Any:
    app = create_app(Settings())
    app.testing = True
    client: FlaskClient = app.test_client()
    response = client.post("/validate", data=json.dumps(review), content_type="application/json")
    assert response.status_code == 200
    return response.get_json()


def test_the_readme_shows_a_request_and_two_answers() -> None:
    request, allowed, denied = samples()
    assert request["request"]["operation"] == "UPDATE"
    assert allowed["response"]["allowed"] is True
    assert denied["response"]["allowed"] is False


def test_the_sample_request_gets_the_sample_answer() -> None:
    request, allowed, _ = samples()
    assert answer(request) == allowed


def test_the_finalizer_variant_gets_the_sample_denial() -> None:
    request, _, denied = samples()
    variant = copy.deepcopy(request)
    variant["request"]["object"]["metadata"]["finalizers"] = ["example.com/keep"]
    assert "finalizers" not in variant["request"]["oldObject"]["metadata"]
    assert answer(variant) == denied
