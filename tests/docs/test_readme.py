"""The README documents every setting and the two quick-start commands."""

from __future__ import annotations

from pathlib import Path

import pytest

from webhook.settings import Settings, describe

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


@pytest.mark.parametrize(("env", "yaml_key", "default", "field"), describe())
def test_every_setting_is_in_the_configuration_table(
    env: str, yaml_key: str, default: str, field: str
) -> None:
    rows = [line for line in README.splitlines() if line.startswith(f"| `{env}` |")]
    assert len(rows) == 1, f"{env} is not documented in README.md"
    assert f"`{yaml_key}`" in rows[0]
    shown = default if default else "(none)"
    assert f"`{shown}`" in rows[0] or shown in rows[0], (
        f"{env}: README default differs from {default!r}"
    )
    assert hasattr(Settings(), field)


def test_quick_start_has_exactly_the_two_commands() -> None:
    quick_start = README.split("## Quick start", 1)[1].split("##", 1)[0]
    commands = [
        line.split("#")[0].strip() for line in quick_start.splitlines() if line.startswith("make ")
    ]
    assert commands == ["make run", "make test"]
