"""Small helpers to edit pods by dotted path in table-driven tests.

Paths use the engine's own notation for identifier keys and list indexes
(``spec.containers[0].env[0].value``); keys that are not identifiers are edited with
plain Python in the test itself.
"""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Callable
from typing import Any

Pod = dict[str, Any]
Change = Callable[[Pod], None]

_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def parse(path: str) -> list[str | int]:
    """``spec.containers[0].image`` -> ["spec", "containers", 0, "image"]."""
    segments: list[str | int] = []
    for key, index in _PART.findall(path):
        segments.append(int(index) if index else key)
    return segments


def _parent(obj: Any, segments: list[str | int]) -> Any:
    node = obj
    for segment, following in itertools.pairwise(segments):
        if isinstance(segment, int):
            node = node[segment]
        else:
            if node.get(segment) is None:
                node[segment] = [] if isinstance(following, int) else {}
            node = node[segment]
    return node


def put(obj: Any, path: str, value: Any) -> None:
    """Set ``path`` to a deep copy of ``value``, creating maps on the way."""
    segments = parse(path)
    parent = _parent(obj, segments)
    parent[segments[-1]] = copy.deepcopy(value)


def drop(obj: Any, path: str) -> None:
    """Remove the key (or list item) at ``path``."""
    segments = parse(path)
    parent = _parent(obj, segments)
    del parent[segments[-1]]


def get(obj: Any, path: str) -> Any:
    node = obj
    for segment in parse(path):
        node = node[segment]
    return node


def setting(path: str, value: Any) -> Change:
    def change(pod: Pod) -> None:
        put(pod, path, value)

    return change


def removing(path: str) -> Change:
    def change(pod: Pod) -> None:
        drop(pod, path)

    return change


def appending(path: str, value: Any) -> Change:
    def change(pod: Pod) -> None:
        segments = parse(path)
        parent = _parent(pod, [*segments, 0])
        parent.append(copy.deepcopy(value))

    return change


def combine(*changes: Change) -> Change:
    def change(pod: Pod) -> None:
        for one in changes:
            one(pod)

    return change


def nothing(pod: Pod) -> None:
    """A change that changes nothing."""
