"""The replace rules as a ValidatingAdmissionPolicy: CEL generated from the rule list.

Pure (no I/O): takes a pod's OpenAPI v3 schema document (``/openapi/v3/api/v1`` of a
cluster, or the trimmed copy in ``webhook/schemas/``) and the settings, returns the
policy and its binding as plain dicts. The CLI's ``policy`` command does the I/O.

CEL cannot say "every field except these" (kubernetes#127215), so the policy names
every field the schema has and :mod:`webhook.rules` does not make updatable, and
compares each with the webhook's semantics:

- absent, null, ``{}``, ``[]`` and ``""`` are equal, at every depth (objects are
  compared property by property, string maps value by value, lists of objects item
  by item);
- lists are compared whole (length, then item by item) unless the rules descend into
  their items (``spec.containers[*].image``): then items are matched by position and
  each item's frozen properties compared, naming ``spec.containers[2].env``;
- maps with free keys (``additionalProperties``) are compared whole;
- a subtree the schema does not describe (no type, ``x-kubernetes-preserve-unknown-
  fields``, int-or-string) is compared whole;
- ``SERVER_MANAGED_PATHS`` are ignored; ``FINALIZERS_PATH`` may lose entries (as a
  multiset) when the old pod is being deleted.

The one difference that remains: the webhook freezes fields it has never seen, the
policy only the fields of the schema it was generated from. The policy records which
fields those were (:data:`FIELDS_ANNOTATION`) so that :func:`uncovered_fields` can
report what a newer schema adds.
"""

from __future__ import annotations

import hashlib
import json
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
VALIDATION_ACTIONS: Final[dict[Mode, str]] = {"enforce": "Deny", "warn": "Warn", "audit": "Audit"}
MESSAGE_PREFIX: Final = "pod updates may not change these fields: "
# Paths a denial names (the API server refuses messages over 5 KiB).
MAX_PATHS_IN_MESSAGE: Final = 50
# Kubernetes' per-expression runtime limit and per-binding budget (k8s.io/apiserver
# pkg/apis/cel/config.go: PerCallLimit, RuntimeCELCostBudget).
PER_CALL_LIMIT: Final = 1_000_000
RUNTIME_COST_BUDGET: Final = 10_000_000
# cel-go's parser refuses expressions over 100,000 code points; the spec is split into
# variables well below that (each also gets its own per-call cost limit).
MAX_VARIABLE_LENGTH: Final = 20_000

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


# --- the rules, from webhook.rules' data -------------------------------------


def _not_compared_directly() -> tuple[str, ...]:
    """Paths (``spec.containers[*].image`` notation) the policy never compares: the
    free ones, the server-managed ones, and the finalizers (they get their own check)."""
    return (*UPDATABLE_PATHS, *SERVER_MANAGED_PATHS, FINALIZERS_PATH)


def _rule_kind(rule_path: str, rules: tuple[str, ...]) -> str:
    """free (a rule allows it), items (rules descend into its items), within (rules
    descend into its properties) or frozen."""
    if rule_path in rules:
        return "free"
    if any(rule.startswith(rule_path + WILDCARD) for rule in rules):
        return "items"
    if any(rule.startswith(rule_path + ".") for rule in rules):
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


@dataclass
class _Generator:
    resolver: _Resolver
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

    def equal(self, schema: Mapping[str, Any], a: str, b: str) -> str:
        """CEL: optionals ``a`` and ``b`` are equal under the webhook's semantics."""
        name, schema = self.resolver.resolve(schema)
        self._record(name, schema)
        kind = _kind(schema)
        if kind == "string":
            return f"{a}.orValue('') == {b}.orValue('')"
        if kind == "object":
            parts = [
                self.equal(prop, f"{a}[?{_quote(key)}]", f"{b}[?{_quote(key)}]")
                for key, prop in sorted(schema["properties"].items())
            ]
            return "(" + " && ".join(parts) + ")"
        if kind == "map":
            _, values = self.resolver.resolve(schema["additionalProperties"])
            if _kind(values) == "string":
                x, y, k = self._var("m"), self._var("n"), self._var("k")
                one = f"{x}.all({k}, {x}[{k}] == '' || {y}[?{k}].orValue('') == {x}[{k}])"
                two = f"{y}.all({k}, {y}[{k}] == '' || {x}[?{k}].orValue('') == {y}[{k}])"
                return _bind(
                    x, f"{a}.orValue({{}})", _bind(y, f"{b}.orValue({{}})", f"{one} && {two}")
                )
            return f"{a}.orValue({{}}) == {b}.orValue({{}})"
        if kind == "list":
            item_name, items = self.resolver.resolve(schema["items"])
            if _kind(items) in ("object", "map"):
                x, y, i, v = self._var("l"), self._var("r"), self._var("i"), self._var("v")
                inner = self.equal(
                    schema["items"], f"optional.of(dyn({v}))", f"optional.of(dyn({y}[{i}]))"
                )
                body = f"{x}.size() == {y}.size() && {x}.all({i}, {v}, {inner})"
                return _bind(x, f"{a}.orValue([])", _bind(y, f"{b}.orValue([])", body))
            self._record(item_name, items)
            return f"{a}.orValue([]) == {b}.orValue([])"
        return f"{a} == {b}"

    def walk(
        self,
        schema: Mapping[str, Any],
        rule_path: str,
        a: str,
        b: str,
        path: str,
        index: str = "",
    ) -> Iterator[tuple[str, str]]:
        """(CEL list expression of changed paths, path) for each frozen property.

        ``rule_path`` is the path in the rules' notation (``spec.containers[*]``),
        ``path`` the one shown (``spec.containers[`` + index + ``]``)."""
        name, schema = self.resolver.resolve(schema)
        self._record(name, schema)
        properties = schema.get("properties")
        if not isinstance(properties, Mapping):
            raise SchemaError(f"{path or 'the Pod'} has no properties in the schema")
        rules = _not_compared_directly()
        for key, prop in sorted(properties.items()):
            here = f"{path}.{key}" if path else key
            child_rule = f"{rule_path}.{key}" if rule_path else key
            shown = (
                _quote(here)
                if not index
                else f"{_quote(path + '[')} + string({index}) + {_quote('].' + key)}"
            )
            a_key, b_key = f"{a}[?{_quote(key)}]", f"{b}[?{_quote(key)}]"
            kind = _rule_kind(child_rule, rules)
            if kind == "frozen":
                yield f"({self.equal(prop, a_key, b_key)} ? [] : [{shown}])", here
            elif kind == "items":
                yield self._items(prop, child_rule + WILDCARD, a_key, b_key, here), here
            elif kind == "within":
                yield from self.walk(prop, child_rule, a_key, b_key, here)

    def _items(self, schema: Mapping[str, Any], rule_path: str, a: str, b: str, path: str) -> str:
        """A list the rules descend into: same length, items matched by position."""
        _, schema = self.resolver.resolve(schema)
        if _kind(schema) != "list":
            raise SchemaError(f"{path} is not a list in the schema")
        x, y, i, v = self._var("l"), self._var("r"), self._var("i"), self._var("v")
        per_item = [
            expression
            for expression, _ in self.walk(
                schema["items"],
                rule_path,
                f"optional.of(dyn({v}))",
                f"optional.of(dyn({y}[{i}]))",
                path,
                i,
            )
        ]
        changed = " + ".join(per_item) if per_item else "[]"
        body = (
            f"{x}.size() != {y}.size() ? [{_quote(path)}] : "
            f"{x}.transformList({i}, {v}, ({changed}).join(', ')).filter(s, s != '')"
        )
        return _bind_list(x, f"{a}.orValue([])", _bind_list(y, f"{b}.orValue([])", body))


def _finalizers_expression() -> str:
    """Finalizers unchanged, or (old pod being deleted) only removed, as multisets."""
    parent, _, key = FINALIZERS_PATH.rpartition(".")
    new = f"object[?'{parent}'][?'{key}'].orValue([])"
    old = f"oldObject[?'{parent}'][?'{key}'].orValue([])"
    deleting = f"oldObject[?'{parent}'][?'deletionTimestamp'].orValue('') != ''"
    kept = (
        f"fn == fo || ({deleting} && "
        "fn.all(f, fn.filter(g, g == f).size() <= fo.filter(g, g == f).size()))"
    )
    return f"({_bind('fn', new, _bind('fo', old, kept))} ? [] : [{_quote(FINALIZERS_PATH)}])"


@dataclass(frozen=True)
class Generated:
    """The policy, its binding, and what the policy covers."""

    policy: dict[str, Any]
    binding: dict[str, Any]
    covered: dict[str, list[str]]
    groups: list[str]

    def documents(self) -> list[dict[str, Any]]:
        return [self.policy, self.binding]


def _covered_fields(
    document: Mapping[str, Any],
) -> tuple[dict[str, list[str]], list[tuple[str, str]]]:
    generator = _Generator(_Resolver(_schemas(document)))
    schemas = _schemas(document)
    variables = list(_variables(generator, schemas[POD_SCHEMA]))
    covered = {name: sorted(props) for name, props in sorted(generator.covered.items())}
    return covered, variables


def _variables(generator: _Generator, pod: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(variable name, CEL list of changed paths): one per top-level group.

    Each variable is its own CEL program with its own per-call cost limit, so the
    containers do not share a limit with the rest of the spec.
    """
    groups: dict[str, list[list[str]]] = {}
    for expression, path in generator.walk(pod, "", "object", "oldObject", ""):
        top = path.split(".")[0]
        group = path if path in ("spec.containers", "spec.initContainers") else top
        chunks = groups.setdefault(group, [[]])
        if sum(map(len, chunks[-1])) + len(expression) > MAX_VARIABLE_LENGTH and chunks[-1]:
            chunks.append([])
        chunks[-1].append(expression)
    groups.setdefault("metadata", [[]])[-1].append(_finalizers_expression())
    for group, chunks in groups.items():
        name = "".join(part[:1].upper() + part[1:] for part in group.split("."))
        for number, expressions in enumerate(chunks, 1):
            suffix = str(number) if len(chunks) > 1 else ""
            yield "changed" + name + suffix, " +\n".join(expressions)


def _message_expression() -> str:
    """The changed paths, the first MAX_PATHS_IN_MESSAGE of them, never values."""
    shown = f"variables.changed.transformList(i, p, i < {MAX_PATHS_IN_MESSAGE}, p).join(', ')"
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
) -> Generated:
    """The policy and binding for the rules, the schema and the settings."""
    covered, variables = _covered_fields(document)
    all_changed = " + ".join(f"variables.{variable}" for variable, _ in variables)
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
            *({"name": variable, "expression": expression} for variable, expression in variables),
            {"name": "changed", "expression": all_changed},
        ],
        "validations": [
            {
                "expression": "variables.changed.size() == 0",
                "messageExpression": _message_expression(),
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
    return Generated(policy, binding, covered, [variable for variable, _ in variables])


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
