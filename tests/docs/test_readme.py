"""The README documents every setting and the two quick-start commands."""

from __future__ import annotations

from pathlib import Path

import pytest

from webhook.settings import Settings, describe

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def table_cells(readme: str, env: str) -> list[str]:
    """The cells of the configuration table's row for ``env`` (exactly one row)."""
    rows = [line for line in readme.splitlines() if line.startswith(f"| `{env}` |")]
    assert len(rows) == 1, f"{env} is not documented in README.md"
    return [cell.strip() for cell in rows[0].strip().strip("|").split("|")]


def shown_default(default: str) -> str:
    return f"`{default}`" if default else "(none)"


@pytest.mark.parametrize(("env", "yaml_key", "default", "field"), describe())
def test_every_setting_is_in_the_configuration_table(
    env: str, yaml_key: str, default: str, field: str
) -> None:
    cells = table_cells(README, env)
    assert cells[1] == f"`{yaml_key}`"
    # The default column, exactly: a substring match would accept a changed default
    # whose new text happens to appear elsewhere in the row.
    assert cells[2] == shown_default(default), f"{env}: README says {cells[2]}, code {default!r}"
    assert hasattr(Settings(), field)


def test_a_stale_default_in_the_table_is_caught() -> None:
    """Two defaults changed in the README (the text of each still in its row): both
    rows fail the comparison the test above makes."""
    stale = README
    for env, _, default, _ in describe():
        if env in ("PRG_WORKERS", "PRG_THREADS"):
            row = next(line for line in README.splitlines() if line.startswith(f"| `{env}` |"))
            stale = stale.replace(row, row.replace(f"| `{default}` |", "| `1` |") + f" {default}")
    for env, _, default, _ in describe():
        if env in ("PRG_WORKERS", "PRG_THREADS"):
            assert table_cells(stale, env)[2] != shown_default(default)


def test_quick_start_has_exactly_the_two_commands() -> None:
    quick_start = README.split("## Quick start", 1)[1].split("##", 1)[0]
    commands = [
        line.split("#")[0].strip() for line in quick_start.splitlines() if line.startswith("make ")
    ]
    assert commands == ["make run", "make test"]
