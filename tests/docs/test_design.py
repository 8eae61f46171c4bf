"""docs/design.md's module table names every module of webhook/, each once."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_module_table_lists_every_module() -> None:
    text = (REPO / "docs" / "design.md").read_text(encoding="utf-8")
    table = re.findall(r"^\| `(webhook/[^`]+)` \|", text, re.MULTILINE)
    modules = sorted(
        f"webhook/{p.name}" + ("/" if p.is_dir() else "")
        for p in (REPO / "webhook").iterdir()
        if (p.suffix == ".py" and p.name != "__init__.py")
        or (p.is_dir() and not p.name.startswith("__"))
    )
    assert sorted(table) == modules
