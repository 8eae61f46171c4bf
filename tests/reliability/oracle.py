"""An independent, deliberately simple oracle of the pod replace rules.

Written from the rules as documented ("Replacing a Specified Pod" and the README), not
from ``webhook.rules``, which it never imports. It is meant to be obviously right
rather than fast or informative:

1. Flatten each pod to ``{path: leaf}``. A path is a tuple of segments: a map key,
   a list index, or the length of a list. Empty values (absent, null, "", {}, [])
   mean "not set", as in Kubernetes' serialisation, so they produce no entry at all.
2. A path differs when its entry differs between the two pods (or exists in one only).
3. The update is allowed iff every differing path lies under an updatable path or a
   server-managed path. The one exception: a pod that is being deleted (its old
   object has a deletionTimestamp) may lose finalizers, so when the new finalizers are
   a sub-multiset of the old ones, differences under ``metadata.finalizers`` are
   ignored.

Leaves compare with Python equality of the decoded JSON values (so ``1 == 1.0``), as
values decoded into the API server's typed fields would.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Final

# A segment: ("key", name), ("index", position) or ("length", "") for a list's length.
Segment = tuple[str, Any]
FlatPath = tuple[Segment, ...]
ANY_INDEX: Final = object()


def _key(name: str) -> Segment:
    return ("key", name)


def _each_index() -> Segment:
    return ("index", ANY_INDEX)


# The fields a pod update may change, from the Kubernetes API reference
# ("Replacing a Specified Pod"): metadata except a few identity fields is NOT
# included; only these.
UPDATABLE: Final[tuple[FlatPath, ...]] = (
    (_key("metadata"), _key("selfLink")),
    (_key("metadata"), _key("resourceVersion")),
    (_key("metadata"), _key("clusterName")),
    (_key("metadata"), _key("generateName")),
    (_key("metadata"), _key("labels")),
    (_key("metadata"), _key("annotations")),
    (_key("spec"), _key("containers"), _each_index(), _key("image")),
    (_key("spec"), _key("initContainers"), _each_index(), _key("image")),
    (_key("spec"), _key("activeDeadlineSeconds")),
    (_key("spec"), _key("tolerations")),
)

# Fields the API server rewrites itself on every write (never the user's change).
SERVER_MANAGED: Final[tuple[FlatPath, ...]] = (
    (_key("metadata"), _key("managedFields")),
    (_key("metadata"), _key("generation")),
    (_key("status"),),
)

FINALIZERS: Final[FlatPath] = (_key("metadata"), _key("finalizers"))


def is_empty(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, str | dict | list):
        return len(value) == 0
    return False


def flatten(value: object, prefix: FlatPath = ()) -> dict[FlatPath, Any]:
    """``{path: leaf}`` for every non-empty leaf, plus the length of every list."""
    out: dict[FlatPath, Any] = {}
    stack: list[tuple[FlatPath, object]] = [(prefix, value)]
    while stack:
        path, current = stack.pop()
        if is_empty(current):
            continue
        if isinstance(current, dict):
            for name, child in current.items():
                stack.append(((*path, ("key", name)), child))
        elif isinstance(current, list):
            out[(*path, ("length", ""))] = len(current)
            for position, child in enumerate(current):
                stack.append(((*path, ("index", position)), child))
        else:
            out[path] = current
    return out


def _under(path: FlatPath, rule: FlatPath) -> bool:
    if len(path) < len(rule):
        return False
    for have, want in zip(path, rule, strict=False):
        if want[1] is ANY_INDEX:
            if have[0] != "index":
                return False
        elif have != want:
            return False
    return True


def _metadata(pod: dict[str, Any]) -> dict[str, Any]:
    metadata = pod.get("metadata")
    return metadata if isinstance(metadata, dict) else {}


def _string_list(value: object) -> list[str] | None:
    if is_empty(value):
        return []
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    return None


def _finalizer_removal_exempt(old: dict[str, Any], new: dict[str, Any]) -> bool:
    if is_empty(_metadata(old).get("deletionTimestamp")):
        return False
    before = _string_list(_metadata(old).get("finalizers"))
    after = _string_list(_metadata(new).get("finalizers"))
    if before is None or after is None:
        return False
    return all(count <= Counter(before)[name] for name, count in Counter(after).items())


def differing_paths(old: dict[str, Any], new: dict[str, Any]) -> set[FlatPath]:
    missing = object()
    flat_old, flat_new = flatten(old), flatten(new)
    return {
        path
        for path in flat_old.keys() | flat_new.keys()
        if flat_old.get(path, missing) != flat_new.get(path, missing)
    }


def frozen_changes(old: dict[str, Any], new: dict[str, Any]) -> set[FlatPath]:
    """The differing paths that no rule allows."""
    ignored = UPDATABLE + SERVER_MANAGED
    if _finalizer_removal_exempt(old, new):
        ignored = (*ignored, FINALIZERS)
    return {
        path
        for path in differing_paths(old, new)
        if not any(_under(path, rule) for rule in ignored)
    }


def allowed(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """The oracle's verdict on replacing ``old`` with ``new``."""
    return not frozen_changes(old, new)
