"""The replace rules as a ValidatingAdmissionPolicy: CEL generated from the rule list.

Pure (no I/O): takes a pod's OpenAPI v3 schema document (``/openapi/v3/api/v1`` of a
cluster, or the trimmed copy in ``webhook/schemas/``) and the settings, returns the
policy and its binding as plain dicts. The CLI's ``policy`` command does the I/O.

CEL cannot say "every field except these" (kubernetes#127215), so the policy names
every field the schema has and :mod:`webhook.rules` does not make updatable, at the
level where a rule (or :data:`LOOSE_PATHS`) lies beneath:

- a frozen field is compared whole, ``object.?spec[?k] != oldObject.?spec[?k]`` for
  each name of a list: one native equality per subtree, whatever it holds;
- the objects a rule lies beneath (metadata, spec) are walked property by property;
- lists the rules descend into (``spec.containers[*].image``) are compared whole, and
  only if they differ matched by position, each item's frozen properties compared,
  naming ``spec.containers[2].env``;
- :data:`LOOSE_PATHS` compare absent and empty alike, where the API server lets the
  one replace the other;
- ``SERVER_MANAGED_PATHS`` are ignored; ``FINALIZERS_PATH`` may lose entries (as a
  multiset) when the old pod is being deleted.

Every term of the CEL is preceded by a ``//`` comment saying what it compares.

Two variants (:data:`VARIANTS`), from the same rules and schema, differing only in how
a list is walked by position: API servers from 1.33 offer two-variable comprehensions
(``l.transformList(i, v, ...)``); older ones (1.30 to 1.32) do not, and that variant
counts positions with the digits of :data:`DIGITS_VARIABLE` instead.

The one difference that remains: the webhook freezes fields it has never seen, the
policy only the fields of the schema it was generated from at the levels it walks
(beneath a subtree compared whole, every field counts). The policy records which
fields those were (:data:`FIELDS_ANNOTATION`) so that :func:`uncovered_fields` can
report what a newer schema adds.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from webhook.rules import (
    FINALIZERS_PATH,
    SERVER_MANAGED_PATHS,
    UPDATABLE_PATHS,
    WILDCARD,
    describe_updatable_fields,
)
from webhook.settings import Mode, Settings

POD_SCHEMA: Final = "io.k8s.api.core.v1.Pod"
POLICY_NAME: Final = "pod-replace-guard"
ANNOTATION_PREFIX: Final = "pod-replace-guard.io/"
FINGERPRINT_ANNOTATION: Final = ANNOTATION_PREFIX + "schema-fingerprint"
FIELDS_ANNOTATION: Final = ANNOTATION_PREFIX + "fields"
VERSION_ANNOTATION: Final = ANNOTATION_PREFIX + "schema-version"
VARIANT_ANNOTATION: Final = ANNOTATION_PREFIX + "kubernetes-versions"
VALIDATION_ACTIONS: Final[dict[Mode, str]] = {"enforce": "Deny", "warn": "Warn", "audit": "Audit"}
MESSAGE_PREFIX: Final = "pod updates may not change these fields: "
# Paths a denial names (the API server refuses messages over 5 KiB).
MAX_PATHS_IN_MESSAGE: Final = 50
# Kubernetes' per-expression runtime limit and per-binding budget (k8s.io/apiserver
# pkg/apis/cel/config.go: PerCallLimit, RuntimeCELCostBudget).
PER_CALL_LIMIT: Final = 1_000_000
RUNTIME_COST_BUDGET: Final = 10_000_000
# The CEL a new expression may use: the API server's libraries less those introduced in
# its own release (a new expression compiles at the compatibility version, one minor
# behind; k8s.io/apiserver pkg/cel/environment/base.go). Two-variable comprehensions
# (ext.TwoVarComprehensions: transformList) are introduced in 1.32, so usable from 1.33;
# what both variants use (optional types 1.28, ext.Strings' join, the list macros) is
# usable from 1.29. ValidatingAdmissionPolicy is GA (admissionregistration.k8s.io/v1)
# from 1.30, the oldest the chart allows. (name, oldest (major, minor) it compiles on).
VARIANT_POSITIONS: Final = "v1.30+"
VARIANT_TWO_VARIABLE: Final = "v1.33+"
VARIANTS: Final[dict[str, tuple[int, int]]] = {
    VARIANT_TWO_VARIABLE: (1, 33),
    VARIANT_POSITIONS: (1, 30),
}
NEWEST_VARIANT: Final = VARIANT_TWO_VARIABLE
# The positions variant: a list position is three base-100 digits, so lists of up to
# MAX_POSITIONS items are walked; a longer one is named as changed (its cost is far past
# the per-call limit anyway, see docs/benchmarks.md).
DIGITS_VARIABLE: Final = "digits"
MAX_POSITIONS: Final = 100**3
# cel-go's parser refuses expressions over 100,000 code points; the spec is split into
# variables well below that (each also gets its own per-call cost limit).
MAX_VARIABLE_LENGTH: Final = 20_000

# Both pods reach admission through the same typed conversion (Go structs, then JSON),
# so a frozen field is compared whole, with one native equality: "not set" is rendered
# the same way in both, except where the Go type allows two renderings that the API
# server's own update validation lets through to admission (apiequality.Semantic takes
# a nil slice or map for an empty one; a few fields are mutable for some pods). There,
# and only there, the policy compares as the webhook does at that level: absent, null,
# {}, [] and "" alike, and in a map of strings a key whose value is "" alike with no key.
# Beneath these paths every optional field is omitempty or a pointer that validation
# tells from an empty value (k8s.io/api core/v1 types.go). Each case is sent through a
# real API server (tests/e2e/test_policy_equivalence.py, EMPTY_CASES).
LOOSE_PATHS: Final[dict[str, str]] = {
    "spec.nodeSelector": 'a scheduling-gated pod may gain a key whose value is ""',
    "spec.affinity.nodeAffinity": "a scheduling-gated pod may gain or lose nodeAffinity: {}",
    "spec.volumes[*].projected.sources": "not omitempty in the Go type: null or []",
}

_IDENT: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# CEL's reserved words cannot follow ``.?`` (cel-spec, "Syntax").
_CEL_RESERVED: Final = frozenset(
    {
        "as", "break", "const", "continue", "else", "false", "for", "function", "if",
        "import", "in", "let", "loop", "package", "namespace", "null", "return", "true",
        "var", "void", "while",
    }
)  # fmt: skip

_SCHEMA_KEEP: Final = (
    "type",
    "format",
    "properties",
    "items",
    "additionalProperties",
    "allOf",
    "oneOf",
    "anyOf",
    "$ref",
    "maxItems",
    "maxLength",
    "maxProperties",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-int-or-string",
    "x-kubernetes-embedded-resource",
)


class SchemaError(ValueError):
    """The document is not an OpenAPI v3 schema with a Pod in it."""


class VersionError(ValueError):
    """A Kubernetes version no variant of the policy runs on, or not a version."""


_VERSION: Final = re.compile(r"^v?(\d+)\.(\d+)(?:\.\d+)?(?:[-+].*)?$")


def variant_for(kube_version: str) -> str:
    """The variant for an API server of ``kube_version`` (``v1.30.2``, ``1.33``,
    ``v1.31.4-eks-1``): the newest one whose CEL that release offers."""
    match = _VERSION.match(kube_version.strip())
    if not match:
        raise VersionError(
            f"not a Kubernetes version: {kube_version[:40]!r} (e.g. 1.30 or v1.33.2)"
        )
    release = (int(match[1]), int(match[2]))
    for variant, oldest in VARIANTS.items():
        if release >= oldest:
            return variant
    oldest_text = ".".join(map(str, min(VARIANTS.values())))
    raise VersionError(
        f"Kubernetes {match[1]}.{match[2]} is not supported: ValidatingAdmissionPolicy v1 "
        f"and the CEL the policy uses need {oldest_text} or later"
    )


# --- the rules, from webhook.rules' data -------------------------------------


def _not_compared_directly() -> tuple[str, ...]:
    """Paths (``spec.containers[*].image`` notation) the policy never compares: the
    free ones, the server-managed ones, and the finalizers (they get their own check)."""
    return (*UPDATABLE_PATHS, *SERVER_MANAGED_PATHS, FINALIZERS_PATH)


def _rule_kind(rule_path: str, rules: tuple[str, ...]) -> str:
    """free (a rule allows it), loose (:data:`LOOSE_PATHS`), items (rules descend into
    its items), within (rules descend into its properties) or frozen (compared whole)."""
    if rule_path in rules:
        return "free"
    if rule_path in LOOSE_PATHS:
        return "loose"
    below = (*rules, *LOOSE_PATHS)
    if any(rule.startswith(rule_path + WILDCARD) for rule in below):
        return "items"
    if any(rule.startswith(rule_path + ".") for rule in below):
        return "within"
    return "frozen"


# --- the schema ----------------------------------------------------------------


def _schemas(document: Mapping[str, Any]) -> dict[str, Any]:
    components = document.get("components") if isinstance(document, Mapping) else None
    schemas = components.get("schemas") if isinstance(components, Mapping) else None
    if not isinstance(schemas, dict) or not isinstance(schemas.get(POD_SCHEMA), dict):
        raise SchemaError(f"not an OpenAPI v3 document with components.schemas[{POD_SCHEMA}]")
    return schemas


def _ref_name(ref: object) -> str:
    if not isinstance(ref, str) or not ref.startswith("#/components/schemas/"):
        raise SchemaError(f"unsupported $ref {ref!r}")
    return ref.rsplit("/", 1)[1]


class _Resolver:
    def __init__(self, schemas: dict[str, Any]) -> None:
        self.schemas = schemas

    def resolve(self, schema: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
        """(definition name or "", the schema with $ref and single allOf followed)."""
        name = ""
        for _ in range(32):
            if "$ref" in schema:
                name = _ref_name(schema["$ref"])
                target = self.schemas.get(name)
                if not isinstance(target, Mapping):
                    raise SchemaError(f"$ref to a missing schema {name}")
                schema = target
            elif isinstance(schema.get("allOf"), list) and len(schema["allOf"]) == 1:
                schema = schema["allOf"][0]
            else:
                return name, schema
        raise SchemaError("$ref chain too long")


def trim_schema(document: Mapping[str, Any]) -> dict[str, Any]:
    """The definitions reachable from the Pod, without descriptions: the package data."""
    schemas = _schemas(document)
    kept: dict[str, Any] = {}
    pending = [POD_SCHEMA]
    while pending:
        name = pending.pop()
        if name in kept:
            continue
        if not isinstance(schemas.get(name), Mapping):
            raise SchemaError(f"$ref to a missing schema {name}")
        kept[name] = _strip(schemas[name], pending)
    return {"components": {"schemas": dict(sorted(kept.items()))}}


def _strip(schema: object, refs: list[str]) -> Any:
    if isinstance(schema, list):
        return [_strip(item, refs) for item in schema]
    if not isinstance(schema, Mapping):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "properties" and isinstance(value, Mapping):
            out[key] = {name: _strip(prop, refs) for name, prop in value.items()}
        elif key == "$ref":
            refs.append(_ref_name(value))
            out[key] = value
        elif key in _SCHEMA_KEEP:
            out[key] = _strip(value, refs)
    return out


# --- CEL generation ------------------------------------------------------------


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _or_empty(optional: str, empty: str) -> str:
    """CEL: the value of ``optional``, or ``empty`` if it is absent or null."""
    return f"[{optional}.orValue({empty})].map(e, e == null ? {empty} : e)[0]"


def _is_empty(value: str) -> str:
    """CEL: ``value`` (a string, list, map or object, or null) is null or empty. Not
    ``optional.ofNonZeroValue``: an object that kube-apiserver 1.37 types from the
    schema is not a zero value when empty."""
    return f"{value} == null || size({value}) == 0"


def _bind(name: str, value: str, body: str) -> str:
    """CEL ``body`` (a bool) with ``name`` bound to ``value``: a one-item ``all``, since
    the API server's CEL environment has no ``cel.bind``."""
    return f"[dyn({value})].all({name}, {body})"


def _bind_list(name: str, value: str, body: str) -> str:
    """:func:`_bind` for a ``body`` that is a list."""
    return f"[dyn({value})].map({name}, {body})[0]"


def _kind(schema: Mapping[str, Any]) -> str:
    """object, map, list, string, scalar or whole (compare as one value)."""
    if schema.get("x-kubernetes-preserve-unknown-fields") or schema.get(
        "x-kubernetes-int-or-string"
    ):
        return "whole"
    kind = schema.get("type")
    if kind == "object" or (kind is None and "properties" in schema):
        if isinstance(schema.get("properties"), Mapping) and schema["properties"]:
            return "object"
        if isinstance(schema.get("additionalProperties"), Mapping):
            return "map"
        return "whole"
    if kind == "array" and isinstance(schema.get("items"), Mapping):
        return "list"
    if kind == "string":
        return "string"
    if kind in ("integer", "number", "boolean"):
        return "scalar"
    return "whole"


@dataclass(frozen=True)
class _Shown:
    """A path as the policy names it: literal text and list indexes bound in CEL
    (``spec.volumes[`` i ``].projected``)."""

    parts: tuple[tuple[bool, str], ...] = ()  # (is an index variable, text)

    def __bool__(self) -> bool:
        return bool(self.parts)

    def literal(self, text: str) -> _Shown:
        return _Shown((*self.parts, (False, text)))

    def key(self, key: str) -> _Shown:
        return self.literal("." + key if self.parts else key)

    def item(self, index: str) -> _Shown:
        return _Shown((*self.parts, (False, "["), (True, index), (False, "]")))

    def cel(self) -> str:
        """A CEL string expression: ``'spec.volumes[' + string(i) + '].projected'``."""
        merged: list[str] = []
        text = ""
        for variable, part in self.parts:
            if variable:
                if text:
                    merged.append(_quote(text))
                merged.append(f"string({part})")
                text = ""
            else:
                text += part
        if text or not merged:
            merged.append(_quote(text))
        return " + ".join(merged)

    def text(self) -> str:
        """For comments: ``spec.volumes[i].projected``."""
        return "".join("i" if variable else part for variable, part in self.parts)


@dataclass(frozen=True)
class _Term:
    """One CEL list of changed paths, the comment that says what it compares, and the
    variable it belongs to."""

    expression: str
    comment: str
    group: str


def _access(base: str, key: str) -> str:
    """``base.?key`` (an optional), or ``base[?'key']`` for a key that is no identifier."""
    if _IDENT.match(key) and key not in _CEL_RESERVED:
        return f"{base}.?{key}"
    return f"{base}[?{_quote(key)}]"


def _wrap(names: list[str], indent: str, width: int = 88) -> str:
    """``['a', 'b', ...]`` over as many lines as it takes."""
    lines: list[str] = []
    line = ""
    for name in names:
        item = _quote(name) + ", "
        if line and len(indent) + len(line) + len(item) > width:
            lines.append(line.rstrip())
            line = ""
        line += item
    lines.append(line.rstrip().rstrip(","))
    if len(lines) == 1:
        return "[" + lines[0] + "]"
    return "[\n" + "\n".join(indent + "  " + text for text in lines) + "\n" + indent + "]"


@dataclass
class _Generator:
    resolver: _Resolver
    # False: the positions variant (:data:`VARIANT_POSITIONS`), for API servers without
    # two-variable comprehensions.
    two_variable: bool = True
    # definition name -> the properties the policy compares (or walks through)
    covered: dict[str, set[str]] = field(default_factory=dict)
    depth: int = 0

    def _var(self, stem: str) -> str:
        self.depth += 1
        return f"{stem}{self.depth}"

    def _record(self, name: str, schema: Mapping[str, Any]) -> None:
        if name:
            properties = schema.get("properties")
            self.covered.setdefault(name, set()).update(
                properties if isinstance(properties, Mapping) else ()
            )

    def loosely_equal(self, schema: Mapping[str, Any], a: str, b: str) -> str:
        """CEL: optionals ``a`` and ``b`` equal as the webhook compares them at this level
        (absent, null, {}, [] and "" alike; in a map of strings, a key whose value is ""
        alike with no key), what lies beneath compared whole. Only for
        :data:`LOOSE_PATHS`, where nothing beneath can differ that way."""
        _, schema = self.resolver.resolve(schema)
        kind = _kind(schema)
        if kind == "map":
            _, values = self.resolver.resolve(schema["additionalProperties"])
            if _kind(values) == "string":
                x, y, k = self._var("m"), self._var("n"), self._var("k")
                one = f"{x}.all({k}, {x}[{k}] == '' || {y}[?{k}].orValue('') == {x}[{k}])"
                two = f"{y}.all({k}, {y}[{k}] == '' || {x}[?{k}].orValue('') == {y}[{k}])"
                return f"{a} == {b} || " + _bind(
                    x, _or_empty(a, "{}"), _bind(y, _or_empty(b, "{}"), f"{one} && {two}")
                )
        if kind in ("object", "map", "list", "string"):
            both = f"[{a}.orValue(null), {b}.orValue(null)]"
            return f"{a} == {b} || {both}.all(e, {_is_empty('e')})"
        return f"{a} == {b}"

    def walk(
        self,
        schema: Mapping[str, Any],
        rule_path: str,
        a: str,
        b: str,
        shown: _Shown,
        group: str = "",
        indent: str = "",
    ) -> Iterator[_Term]:
        """The terms that compare the properties of the object at ``shown``: one for the
        frozen ones (each compared whole), one per property the rules or
        :data:`LOOSE_PATHS` descend into.

        ``rule_path`` is the path in the rules' notation (``spec.containers[*]``);
        ``a`` and ``b`` are the new and the old object there (maps or optionals)."""
        name, schema = self.resolver.resolve(schema)
        self._record(name, schema)
        properties = schema.get("properties")
        if not isinstance(properties, Mapping):
            raise SchemaError(f"{shown.text() or 'the Pod'} has no properties in the schema")
        rules = _not_compared_directly()
        frozen: list[str] = []
        nested: list[_Term] = []
        for key, prop in sorted(properties.items()):
            here = shown.key(key)
            child_rule = f"{rule_path}.{key}" if rule_path else key
            a_key, b_key = _access(a, key), _access(b, key)
            kind = _rule_kind(child_rule, rules)
            if kind == "frozen":
                self.resolver.resolve(prop)  # a broken $ref is an error even here
                frozen.append(key)
            elif kind == "loose":
                check = self.loosely_equal(prop, a_key, b_key)
                nested.append(
                    _Term(
                        f"({check} ? [] : [{here.cel()}])",
                        f'{here.text()}: absent, null, {{}}, [] and "" alike (here, not '
                        f"beneath),\n{indent}// as {LOOSE_PATHS[child_rule]}",
                        group or key,
                    )
                )
            elif kind == "items":
                nested.append(self._items(prop, child_rule + WILDCARD, a_key, b_key, here, indent))
            elif kind == "within":
                nested.extend(self.walk(prop, child_rule, a_key, b_key, here, group or key, indent))
        if frozen:
            compared = f".filter(k, {a}[?k] != {b}[?k])"
            named = f".map(k, {shown.literal('.').cel()} + k)" if shown else ""
            yield _Term(
                _wrap(frozen, indent) + compared + named,
                f"{shown.text() or 'the pod'}: these fields unchanged, each compared whole",
                group or "+".join(frozen),
            )
        yield from nested

    def _items(
        self, schema: Mapping[str, Any], rule_path: str, a: str, b: str, shown: _Shown, indent: str
    ) -> _Term:
        """A list the rules descend into: unchanged as a whole, or the same length with
        the items matched by position, each item's fields compared."""
        _, schema = self.resolver.resolve(schema)
        if _kind(schema) != "list":
            raise SchemaError(f"{shown.text()} is not a list in the schema")
        x, y = self._var("l"), self._var("r")
        i, v = self._var("i"), self._var("v")
        # the new item: bound by transformList, or looked up by its position
        item = v if self.two_variable else f"{x}[{i}]"
        inner = indent + "    " if self.two_variable else indent + "        "
        per_item = list(
            self.walk(
                schema["items"], rule_path, item, f"{y}[{i}]", shown.item(i), shown.text(), inner
            )
        )
        changed = (
            f"\n{inner}+ ".join(f"// {t.comment}\n{inner}{t.expression}" for t in per_item)
            if per_item
            else "[]"
        )
        free = sorted(
            rule[len(rule_path) + 1 :]
            for rule in _not_compared_directly()
            if rule.startswith(rule_path + ".")
        )
        judged = f"{item} == {y}[{i}] ? '' : (\n{inner}{changed}\n{inner[:-2]}).join(', ')"
        if self.two_variable:
            size_differs = f"{x}.size() != {y}.size()"
            walked = f"{x}.transformList({i}, {v}, {judged}).filter(s, s != '')"
            how = "by position"
        else:
            size_differs = f"{x}.size() != {y}.size() || {x}.size() > {MAX_POSITIONS}"
            walked = self._by_position(f"{x}.size()", i, judged, indent)
            how = "by position (three base-100 digits)"
        body = f"{size_differs} ? [{shown.cel()}] :\n{indent}  {walked}"
        expression = f"{a} == {b} ? [] :\n{indent}" + _bind_list(
            x, _or_empty(a, "[]"), _bind_list(y, _or_empty(b, "[]"), body)
        )
        but = f", all fields but {', '.join(free)}" if free else ""
        return _Term(
            expression,
            f"{shown.text()}: unchanged, or as many items matched {how}{but}",
            shown.text(),
        )

    def _by_position(self, size: str, i: str, judged: str, indent: str) -> str:
        """CEL: the non-empty strings ``judged`` gives for each position ``i`` below
        ``size``, without two-variable comprehensions: ``i`` is built from three digits
        (:data:`DIGITS_VARIABLE`), each level keeping the digits below ``size``; the
        strings are joined level by level, as the lists cannot be flattened. A level
        that ``size`` does not reach counts only 0 (a short list costs 100 steps, not 300)."""
        h, t, u = self._var("h"), self._var("t"), self._var("u")
        digits = f"variables.{DIGITS_VARIABLE}"
        hundreds = f"{h} * 10000 + {t} * 100"
        return (
            f"({size} > 10000 ? {digits} : [0]).filter({h}, {h} * 10000 < {size}).map({h},\n"
            f"{indent}    ({size} > 100 ? {digits} : [0]).filter({t}, {hundreds} < {size})"
            f".map({t},\n"
            f"{indent}      {digits}.filter({u}, {hundreds} + {u} < {size}).map({u},\n"
            f"{indent}        [{hundreds} + {u}].map({i}, {judged})[0]\n"
            f"{indent}      ).filter(s, s != '').join(', ')\n"
            f"{indent}    ).filter(s, s != '').join(', ')\n"
            f"{indent}  ).filter(s, s != '')"
        )


def _finalizers_term() -> _Term:
    """Finalizers unchanged, or (old pod being deleted) only removed, as multisets."""
    parent, _, key = FINALIZERS_PATH.rpartition(".")
    new = _access(_access("object", parent), key) + ".orValue([])"
    old = _access(_access("oldObject", parent), key) + ".orValue([])"
    deleting = _access(_access("oldObject", parent), "deletionTimestamp") + ".orValue('') != ''"
    kept = (
        f"fn == fo || ({deleting} && "
        "fn.all(f, fn.filter(g, g == f).size() <= fo.filter(g, g == f).size()))"
    )
    return _Term(
        f"({_bind('fn', new, _bind('fo', old, kept))} ? [] : [{_quote(FINALIZERS_PATH)}])",
        f"{FINALIZERS_PATH}: unchanged, or (the old pod being deleted) only removed",
        parent,
    )


@dataclass(frozen=True)
class Generated:
    """The policy, its binding, and what the policy covers."""

    policy: dict[str, Any]
    binding: dict[str, Any]
    covered: dict[str, list[str]]
    groups: list[str]
    variant: str = NEWEST_VARIANT

    def documents(self) -> list[dict[str, Any]]:
        return [self.policy, self.binding]


def _covered_fields(
    document: Mapping[str, Any], variant: str = NEWEST_VARIANT
) -> tuple[dict[str, list[str]], list[tuple[str, str]]]:
    """The fields compared (the same in every variant) and the variables."""
    if variant not in VARIANTS:
        raise VersionError(f"no policy variant {variant!r}: one of {', '.join(VARIANTS)}")
    generator = _Generator(_Resolver(_schemas(document)), variant != VARIANT_POSITIONS)
    schemas = _schemas(document)
    variables = list(_variables(generator, schemas[POD_SCHEMA]))
    covered = {name: sorted(props) for name, props in sorted(generator.covered.items())}
    return covered, variables


def _variable_name(group: str) -> str:
    """``spec.containers`` -> ``changedSpecContainers``, ``apiVersion+kind`` ->
    ``changedApiVersionKind``."""
    parts = re.split(r"[.+]", group)
    return "changed" + "".join(part[:1].upper() + part[1:] for part in parts)


def _variables(generator: _Generator, pod: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(variable name, CEL list of changed paths): one per group of fields (the pod's
    own, metadata, spec, and each list the rules descend into), each term preceded by a
    ``//`` comment saying what it compares.

    Each variable is its own CEL program with its own per-call cost limit, so the
    containers do not share a limit with the rest of the spec.
    """
    groups: dict[str, list[list[str]]] = {}
    terms = [*generator.walk(pod, "", "object", "oldObject", _Shown()), _finalizers_term()]
    for term in terms:
        text = f"// {term.comment}\n{term.expression}"
        chunks = groups.setdefault(term.group, [[]])
        if sum(map(len, chunks[-1])) + len(text) > MAX_VARIABLE_LENGTH and chunks[-1]:
            chunks.append([])
        chunks[-1].append(text)
    for group, chunks in groups.items():
        for number, texts in enumerate(chunks, 1):
            suffix = str(number) if len(chunks) > 1 else ""
            yield _variable_name(group) + suffix, "\n+ ".join(texts)


def _digits_expression() -> str:
    """The positions variant's digits: 0 to 99, with the comment saying why."""
    return (
        "// The numbers 0 to 99: the base-100 digits of a list position. API servers before\n"
        "// 1.33 offer no two-variable comprehension (transformList) to walk a list with\n"
        "// its positions, so a position is built from three of these digits.\n"
        + _wrap([str(n) for n in range(100)], "").replace("'", "")
    )


def _message_expression(two_variable: bool) -> str:
    """The changed paths, the first MAX_PATHS_IN_MESSAGE of them, never values."""
    if two_variable:
        first = f"variables.changed.transformList(i, p, i < {MAX_PATHS_IN_MESSAGE}, p)"
    else:
        first = (
            f"variables.{DIGITS_VARIABLE}.filter(i, i < {MAX_PATHS_IN_MESSAGE} && "
            "i < variables.changed.size()).map(i, variables.changed[i])"
        )
    shown = f"{first}.join(', ')"
    more = (
        f"(variables.changed.size() > {MAX_PATHS_IN_MESSAGE} ? ' and ' + "
        f"string(variables.changed.size() - {MAX_PATHS_IN_MESSAGE}) + ' more' : '')"
    )
    return f"{_quote(MESSAGE_PREFIX)} + {shown} + {more}"


def fingerprint(covered: Mapping[str, list[str]]) -> str:
    text = json.dumps(covered, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def generate(
    document: Mapping[str, Any],
    settings: Settings,
    *,
    schema_version: str = "",
    name: str = POLICY_NAME,
    variant: str = NEWEST_VARIANT,
) -> Generated:
    """The policy and binding for the rules, the schema and the settings, in the CEL of
    ``variant`` (:data:`VARIANTS`; :func:`variant_for` picks it from a server version)."""
    covered, variables = _covered_fields(document, variant)
    all_changed = " + ".join(f"variables.{variable}" for variable, _ in variables)
    two_variable = variant != VARIANT_POSITIONS
    helpers = [] if two_variable else [(DIGITS_VARIABLE, _digits_expression())]
    match_conditions = [
        {"name": f"not-exempt-{kind}", "expression": expression}
        for kind, names, expression in (
            (
                "user",
                settings.exempt_users,
                "!has(request.userInfo.username) || !(request.userInfo.username in [{}])",
            ),
            (
                "group",
                settings.exempt_groups,
                "!has(request.userInfo.groups) || !request.userInfo.groups.exists(g, g in [{}])",
            ),
        )
        if names
        for expression in [expression.format(", ".join(_quote(name) for name in names))]
    ]
    annotations = {
        FINGERPRINT_ANNOTATION: fingerprint(covered),
        FIELDS_ANNOTATION: json.dumps(covered, sort_keys=True, separators=(",", ":")),
        VARIANT_ANNOTATION: variant,
    }
    if schema_version:
        annotations[VERSION_ANNOTATION] = schema_version
    labels = {
        "app.kubernetes.io/name": "pod-replace-guard",
        "app.kubernetes.io/component": "policy",
    }
    spec: dict[str, Any] = {
        "failurePolicy": "Fail",
        "matchConstraints": {
            "matchPolicy": "Equivalent",
            "resourceRules": [
                {
                    "apiGroups": [""],
                    "apiVersions": ["v1"],
                    "operations": ["UPDATE"],
                    # As the webhook: the main resource, and the subresources it is
                    # told to judge (PRG_JUDGED_SUBRESOURCES); never pods/status.
                    "resources": [
                        "pods",
                        *(f"pods/{name}" for name in settings.judged_subresources),
                    ],
                    "scope": "Namespaced",
                }
            ],
            "namespaceSelector": {
                "matchExpressions": [
                    {
                        "key": "kubernetes.io/metadata.name",
                        "operator": "NotIn",
                        "values": sorted(settings.judged_namespaces_excluded),
                    }
                ]
            },
        },
        "variables": [
            *(
                {"name": variable, "expression": expression}
                for variable, expression in (*helpers, *variables)
            ),
            {"name": "changed", "expression": all_changed},
        ],
        "validations": [
            {
                "expression": "variables.changed.size() == 0",
                "messageExpression": _message_expression(two_variable),
                # Only if the message expression fails: the API server drops messages
                # over 5 KiB, which the bound on the paths shown keeps clear of.
                "message": f"pod updates may change only {describe_updatable_fields()}",
                "reason": "Forbidden",
            }
        ],
    }
    if match_conditions:
        spec["matchConditions"] = match_conditions
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": spec,
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name, "labels": labels},
        "spec": {"policyName": name, "validationActions": [VALIDATION_ACTIONS[settings.mode]]},
    }
    return Generated(policy, binding, covered, [variable for variable, _ in variables], variant)


def installed_coverage(policy: Mapping[str, Any]) -> dict[str, list[str]]:
    """The fields an installed policy recorded it compares."""
    metadata = policy.get("metadata") if isinstance(policy, Mapping) else None
    annotations = metadata.get("annotations") if isinstance(metadata, Mapping) else None
    raw = annotations.get(FIELDS_ANNOTATION) if isinstance(annotations, Mapping) else None
    if not isinstance(raw, str):
        raise SchemaError(f"the policy has no {FIELDS_ANNOTATION} annotation")
    try:
        covered = json.loads(raw)
    except ValueError as error:
        raise SchemaError(f"the {FIELDS_ANNOTATION} annotation is not JSON") from error
    if not isinstance(covered, dict) or not all(
        isinstance(v, list) and all(isinstance(p, str) for p in v) for v in covered.values()
    ):
        raise SchemaError(f"the {FIELDS_ANNOTATION} annotation is not a field list")
    return covered


def installed_variant(policy: Mapping[str, Any]) -> str:
    """The variant an installed policy records; one from before variants were recorded
    used two-variable comprehensions, as :data:`VARIANT_TWO_VARIABLE` does."""
    metadata = policy.get("metadata") if isinstance(policy, Mapping) else None
    annotations = metadata.get("annotations") if isinstance(metadata, Mapping) else None
    raw = annotations.get(VARIANT_ANNOTATION) if isinstance(annotations, Mapping) else None
    if raw is None:
        return VARIANT_TWO_VARIABLE
    if raw not in VARIANTS:
        raise SchemaError(f"the {VARIANT_ANNOTATION} annotation names no known variant")
    return str(raw)


def variant_runs_on(variant: str, kube_version: str) -> bool:
    """Whether an API server of ``kube_version`` compiles ``variant``'s CEL."""
    return VARIANTS[variant] <= VARIANTS[variant_for(kube_version)]


def uncovered_fields(document: Mapping[str, Any], policy: Mapping[str, Any]) -> list[str]:
    """``Definition.property`` of every field the schema would make the policy compare
    that the installed policy does not."""
    installed = installed_coverage(policy)
    wanted, _ = _covered_fields(document)
    missing: list[str] = []
    for definition, properties in wanted.items():
        have = set(installed.get(definition, ()))
        missing.extend(f"{definition}.{prop}" for prop in properties if prop not in have)
    return missing
