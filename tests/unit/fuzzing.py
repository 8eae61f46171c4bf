"""Shared hypothesis settings and strategies for the property ("fuzz") tests.

The budget is bounded by default so the unit suite stays fast; ``make fuzz`` raises it
with ``PRG_FUZZ_EXAMPLES`` (``FUZZ_EXAMPLES`` is accepted too). Test functions that use
these settings are named ``test_fuzz_*`` so ``pytest -k fuzz`` selects them.
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st


def _budget() -> int:
    raw = os.environ.get("PRG_FUZZ_EXAMPLES") or os.environ.get("FUZZ_EXAMPLES") or "200"
    return max(1, int(raw))


FUZZ_EXAMPLES = _budget()

FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    database=None,  # no .hypothesis/ directory in the working tree
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

JSON_SCALARS: st.SearchStrategy[Any] = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)

JSON_VALUES: st.SearchStrategy[Any] = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=24,
)

JSON_OBJECTS: st.SearchStrategy[dict[str, Any]] = st.dictionaries(
    st.text(max_size=10), JSON_VALUES, max_size=6
)


def canonical(value: Any) -> Any:
    """``value`` with every empty value (absent, null, {}, [], "") folded to None.

    Two values with equal canonical forms are the same pod content by the spec's
    empty-equivalence; find_violations must report nothing between them.
    """
    if isinstance(value, dict):
        folded = {key: canonical(item) for key, item in value.items()}
        kept = {key: item for key, item in folded.items() if item is not None}
        return kept or None
    if isinstance(value, list):
        return [canonical(item) for item in value] or None
    if value == "":
        return None
    return value
