from __future__ import annotations

import pytest

from tests.charts.tools import tool_path


@pytest.fixture(scope="session")
def helm() -> str:
    return tool_path("helm")


@pytest.fixture(scope="session")
def promtool() -> str:
    return tool_path("promtool")
