"""The replace rules: which paths of a pod may change, and the structural diff.

Pure functions only (no Flask, no I/O): the server, the ``check`` command and the
tests all call :func:`find_violations`.

The rule list is data. ``UPDATABLE_PATHS`` is copied from the "Replacing a Specified
Pod" API document; ``SERVER_MANAGED_PATHS`` are fields the API server itself rewrites
on every write, which are therefore never the user's change.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Final

UPDATABLE_PATHS: Final[tuple[str, ...]] = (
    "metadata.selfLink",
    "metadata.resourceVersion",
    "metadata.clusterName",
    "metadata.generateName",
    "metadata.labels",
    "metadata.annotations",
    "spec.initContainers[*].image",
    "spec.containers[*].image",
    "spec.activeDeadlineSeconds",
    "spec.tolerations",
)

# Why these are ignored rather than judged:
# - metadata.managedFields: rewritten by the API server on every write (field
#   ownership for server-side apply); the user never edits it directly.
# - metadata.generation: since Kubernetes 1.33 the API server bumps it whenever the
#   pod spec changes, so an allowed image change arrives with a new generation.
# - status: an UPDATE of the main `pods` resource discards status (the pod strategy
#   copies the old status over the new one); `pods/status` is a different API and a
#   subresource, which this webhook does not judge.
SERVER_MANAGED_PATHS: Final[tuple[str, ...]] = (
    "metadata.managedFields",
    "metadata.generation",
    "status",
)

FINALIZERS_PATH: Final = "metadata.finalizers"
_FINALIZERS: Final = tuple(FINALIZERS_PATH.split("."))

# A pod nests ~10 levels deep; anything far deeper is hostile input, and Python's
# recursion limit must never be the one to notice.
MAX_DEPTH: Final = 100
# Down to this depth, equal subtrees are skipped with one C-level comparison each. Below
# it the walk goes on without them: each such comparison runs to the first difference,
# so along a chain of nested maps that differ at the bottom they would cost the square
# of the depth (a hostile 256 KiB review of 95-deep chains took 112 ms). Every field of
# a real pod is shallower (spec.affinity...matchExpressions[0].values[0] is 11 deep).
QUICK_COMPARE_DEPTH: Final = 16

WILDCARD: Final = "[*]"
IDENTIFIER: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_SEGMENT = re.compile(r"\[\*\]|[^.\[]+")

# A path as found: map keys (str) and list indexes (int), rendered once by
# :func:`render_path`, so nothing downstream parses a rendered path again.
PathSegments = tuple[str | int, ...]


class NestingTooDeep(ValueError):
    """The object nests deeper than any pod can; raised instead of RecursionError."""


def render_path(segments: PathSegments) -> str:
    """``spec.containers[0].env``; a key that is not an identifier is quoted as a JSON
    string, ``metadata.annotations["example.com/a.b"]``, so every path renders uniquely
    (the keys ``a\\`` and ``a"`` become ``["a\\\\"]`` and ``["a\\""]``)."""
    parts: list[str] = []
    for segment in segments:
        if isinstance(segment, int):
            parts.append(f"[{segment}]")
        elif IDENTIFIER.match(segment):
            parts.append("." + segment if parts else segment)
        else:
            parts.append("[" + json.dumps(segment, ensure_ascii=False) + "]")
    return "".join(parts)


@dataclass(frozen=True)
class Violation:
    """One changed path that no rule allows. Holds a path, never a value."""

    segments: PathSegments

    @cached_property
    def path(self) -> str:
        return render_path(self.segments)


@dataclass
class _Node:
    """A node of the rule tree; ``terminal`` nodes allow any change beneath them.

    Map keys and list items are kept apart, so a map key spelled ``[*]`` can never
    borrow the wildcard's rules.
    """

    terminal: bool = False
    children: dict[str, _Node] = field(default_factory=dict)
    items: _Node | None = None
    # The keys of the terminal children, set once the tree is built: their values are
    # not compared at all (status and managedFields are a large part of a pod).
    free_keys: frozenset[str] = frozenset()


def _split(rule: str) -> list[str]:
    return _SEGMENT.findall(rule)


def _build_tree(paths: Iterable[str]) -> _Node:
    root = _Node()
    for rule in paths:
        node = root
        for segment in _split(rule):
            if segment == WILDCARD:
                node.items = node.items or _Node()
                node = node.items
            else:
                node = node.children.setdefault(segment, _Node())
        node.terminal = True
    _set_free_keys(root)
    return root


def _set_free_keys(node: _Node) -> None:
    node.free_keys = frozenset(key for key, child in node.children.items() if child.terminal)
    for child in (*node.children.values(), *([node.items] if node.items else [])):
        _set_free_keys(child)


_RULES: Final = _build_tree(UPDATABLE_PATHS + SERVER_MANAGED_PATHS)
_LEAF: Final = _Node()  # a frozen node with no rules below: every difference counts


def _is_empty(value: object) -> bool:
    # Kubernetes omits empty fields when it serialises, so absent (None here), null,
    # {}, [] and "" all mean "not set".
    return value is None or value == "" or (isinstance(value, dict | list) and not value)


def _diff(
    old: object, new: object, node: _Node, path: PathSegments, depth: int, out: _Paths
) -> None:
    if node.terminal:
        return
    if depth > MAX_DEPTH:
        raise NestingTooDeep(f"object nests deeper than {MAX_DEPTH} levels")
    if _is_empty(old) and _is_empty(new):
        return
    if isinstance(old, dict) or isinstance(new, dict):
        old_map = old if isinstance(old, dict) else ({} if _is_empty(old) else None)
        new_map = new if isinstance(new, dict) else ({} if _is_empty(new) else None)
        if old_map is None or new_map is None:  # a map replaced by a scalar or a list
            out.append(path)
            return
        _diff_maps(old_map, new_map, node, path, depth, out)
        return
    if isinstance(old, list) or isinstance(new, list):
        old_list = old if isinstance(old, list) else ([] if _is_empty(old) else None)
        new_list = new if isinstance(new, list) else ([] if _is_empty(new) else None)
        if old_list is None or new_list is None or len(old_list) != len(new_list):
            out.append(path)
            return
        child = node.items or _LEAF
        quick = depth < QUICK_COMPARE_DEPTH
        for index, (old_item, new_item) in enumerate(zip(old_list, new_list, strict=True)):
            if old_item is new_item or (quick and old_item == new_item):
                continue
            _diff(old_item, new_item, child, (*path, index), depth + 1, out)
        return
    # Scalars compare by JSON value with Python's equality (1 == 1.0); the API server
    # decodes into typed Go structs before calling webhooks, so true-versus-1 never
    # reaches a real review.
    if old != new:
        out.append(path)


def _diff_maps(
    old: Mapping[Any, Any],
    new: Mapping[Any, Any],
    node: _Node,
    path: PathSegments,
    depth: int,
    out: _Paths,
) -> None:
    # Keys that may change freely are not looked at; equal subtrees are skipped with
    # one C-level comparison (down to QUICK_COMPARE_DEPTH); only differing branches are
    # walked (in key order), so the cost stays linear in the size of the pod.
    free = node.free_keys
    quick = depth < QUICK_COMPARE_DEPTH
    differing = [
        key
        for key, old_value in old.items()
        if key not in free
        and not (old_value is (new_value := new.get(key)) or (quick and old_value == new_value))
    ]
    differing.extend(
        key
        for key, new_value in new.items()
        if new_value is not None and key not in old and key not in free
    )
    for key in sorted(differing, key=str):
        child = node.children.get(str(key), _LEAF)
        _diff(old.get(key), new.get(key), child, (*path, str(key)), depth + 1, out)


def _finalizers_only_removed(old: Mapping[str, object], new: Mapping[str, object]) -> bool:
    old_finalizers = _string_list(_metadata(old).get("finalizers"))
    new_finalizers = _string_list(_metadata(new).get("finalizers"))
    if old_finalizers is None or new_finalizers is None:
        return False
    return not Counter(new_finalizers) - Counter(old_finalizers)


def _metadata(obj: Mapping[str, object]) -> Mapping[str, object]:
    metadata = obj.get("metadata")
    return metadata if isinstance(metadata, dict) else {}


def _string_list(value: object) -> list[str] | None:
    if _is_empty(value):
        return []
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    return None


def is_being_deleted(obj: Mapping[str, object]) -> bool:
    """True when the pod has a deletionTimestamp (graceful deletion has begun)."""
    return not _is_empty(_metadata(obj).get("deletionTimestamp"))


class _Paths:
    """The violating paths found: the first ``limit`` kept, all of them counted.

    A hostile review can differ in hundreds of thousands of made-up keys; keeping every
    path would cost more memory than the review itself, and nothing shows more than a
    few hundred of them.
    """

    __slots__ = ("kept", "limit", "total")

    def __init__(self, limit: int | None) -> None:
        self.kept: list[PathSegments] = []
        self.limit = limit
        self.total = 0

    def append(self, path: PathSegments) -> None:
        self.total += 1
        if self.limit is None or len(self.kept) < self.limit:
            self.kept.append(path)


def find_violations(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Violation]:
    """Every path that differs between ``old`` and ``new`` and that no rule allows.

    Paths are reported at the deepest level where maps or equal-length lists differ;
    a list whose length changed is reported at the list itself. The order is
    deterministic (map keys sorted, list indexes ascending).

    A pod that is being deleted may always lose finalizers, otherwise it could never
    go away.

    Raises NestingTooDeep for objects nested deeper than any pod.
    """
    return find_violations_bounded(old, new, None)[0]


def find_violations_bounded(
    old: Mapping[str, Any], new: Mapping[str, Any], limit: int | None
) -> tuple[list[Violation], int]:
    """:func:`find_violations`, keeping the first ``limit`` violations (all if None),
    and how many there are in all."""
    paths = _Paths(limit)
    try:
        _diff_maps(old, new, _RULES, (), 0, paths)
    except RecursionError as error:  # a C-level comparison of a hostile object
        raise NestingTooDeep(f"object nests deeper than {MAX_DEPTH} levels") from error
    kept, total = paths.kept, paths.total
    if is_being_deleted(old) and _finalizers_only_removed(old, new):
        removed_only = [p for p in kept if p[:2] == _FINALIZERS]
        kept = [p for p in kept if p[:2] != _FINALIZERS]
        total -= len(removed_only)
    return [Violation(path) for path in kept], total


def describe_updatable_fields() -> str:
    """The updatable paths as one human-readable list, for denial messages."""
    return ", ".join(UPDATABLE_PATHS)
