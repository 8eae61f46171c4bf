"""webhook.admission_policy: the policy generated from the rule list and a pod schema.

What the CEL decides is tested against a real API server (tests/e2e/
test_policy_equivalence.py); here: that every frozen field of the schema is compared
and no free one is, that the rule list is the only source, the scope, the exemptions,
the modes, the schema handling and the coverage report.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from webhook import admission_policy
from webhook.admission_policy import (
    FIELDS_ANNOTATION,
    FINGERPRINT_ANNOTATION,
    MAX_VARIABLE_LENGTH,
    MESSAGE_PREFIX,
    SchemaError,
    generate,
    trim_schema,
    uncovered_fields,
)
from webhook.policy_command import packaged_schema
from webhook.rules import SERVER_MANAGED_PATHS, UPDATABLE_PATHS
from webhook.settings import Settings

POD_SPEC = "io.k8s.api.core.v1.PodSpec"
OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
CONTAINER = "io.k8s.api.core.v1.Container"


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return packaged_schema()


def expressions(generated: admission_policy.Generated) -> dict[str, str]:
    return {v["name"]: v["expression"] for v in generated.policy["spec"]["variables"]}


def all_cel(generated: admission_policy.Generated) -> str:
    return "\n".join(expressions(generated).values())


def top_level(path: str) -> str:
    """The CEL that reads ``spec.x`` from the new object."""
    return "object" + "".join(f"[?'{part}']" for part in path.split("."))


def test_every_frozen_spec_and_metadata_field_is_compared(schema: dict[str, Any]) -> None:
    cel = all_cel(generate(schema, Settings()))
    properties = schema["components"]["schemas"]
    free = {path for path in UPDATABLE_PATHS + SERVER_MANAGED_PATHS if "[*]" not in path}
    checked = 0
    for parent, definition in (("spec", POD_SPEC), ("metadata", OBJECT_META)):
        for name in properties[definition]["properties"]:
            path = f"{parent}.{name}"
            if path in free:
                assert top_level(path) not in cel, f"{path} is free but compared"
            elif name not in ("containers", "initContainers"):
                assert top_level(path) in cel, f"{path} is frozen but not compared"
                assert top_level(path).replace("object", "oldObject", 1) in cel
                checked += 1
    assert checked >= 40


def test_containers_are_matched_by_position_with_only_the_image_free(
    schema: dict[str, Any],
) -> None:
    variables = expressions(generate(schema, Settings()))
    container_fields = schema["components"]["schemas"][CONTAINER]["properties"]
    for variable, kind in (
        ("changedSpecContainers", "containers"),
        ("changedSpecInitContainers", "initContainers"),
    ):
        cel = variables[variable]
        assert f"['spec.{kind}']" in cel  # a length change names the list
        assert f"'spec.{kind}[' + string(" in cel  # then each item by its index
        assert ".transformList(" in cel
        for name in container_fields:
            assert (f"[?'{name}']" in cel) == (name != "image"), name


def test_free_fields_and_server_managed_fields_are_never_read(schema: dict[str, Any]) -> None:
    cel = all_cel(generate(schema, Settings()))
    for path in ("metadata.labels", "metadata.annotations", "metadata.managedFields", "status"):
        assert top_level(path) not in cel
        assert top_level(path).replace("object", "oldObject", 1) not in cel


def test_the_rule_list_is_the_only_source(
    schema: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Making a field updatable in the rules drops it from the policy; nothing else
    lists frozen fields."""
    assert top_level("spec.nodeName") in all_cel(generate(schema, Settings()))
    monkeypatch.setattr(admission_policy, "UPDATABLE_PATHS", (*UPDATABLE_PATHS, "spec.nodeName"))
    cel = all_cel(generate(schema, Settings()))
    assert top_level("spec.nodeName") not in cel
    assert top_level("spec.hostname") in cel


def test_finalizers_may_only_be_removed_from_a_pod_being_deleted(schema: dict[str, Any]) -> None:
    metadata = expressions(generate(schema, Settings()))["changedMetadata"]
    assert "oldObject[?'metadata'][?'deletionTimestamp'].orValue('') != ''" in metadata
    # multiset: each finalizer at most as often as before
    assert "fn.filter(g, g == f).size() <= fo.filter(g, g == f).size()" in metadata
    assert "['metadata.finalizers']" in metadata


def test_empty_values_equal_absent(schema: dict[str, Any]) -> None:
    cel = all_cel(generate(schema, Settings()))
    assert "object[?'spec'][?'nodeName'].orValue('') == oldObject[?'spec'][?'nodeName']" in cel
    # lists and maps: absent is the empty one
    assert "object[?'spec'][?'volumes'].orValue([])" in cel
    assert "object[?'spec'][?'nodeSelector'].orValue({})" in cel
    # a string map: a key with "" equals no key
    assert ".orValue('') == " in cel


def test_judged_subresources_are_matched_as_by_the_webhook(schema: dict[str, Any]) -> None:
    settings = Settings(judged_subresources=("ephemeralcontainers", "resize"))
    (rule,) = generate(schema, settings).policy["spec"]["matchConstraints"]["resourceRules"]
    assert rule["resources"] == ["pods", "pods/ephemeralcontainers", "pods/resize"]


def test_the_policy_shape_scope_and_message(schema: dict[str, Any]) -> None:
    generated = generate(schema, Settings())
    spec = generated.policy["spec"]
    assert spec["failurePolicy"] == "Fail"
    (rule,) = spec["matchConstraints"]["resourceRules"]
    assert rule == {
        "apiGroups": [""],
        "apiVersions": ["v1"],
        "operations": ["UPDATE"],
        "resources": ["pods"],
        "scope": "Namespaced",
    }
    (validation,) = spec["validations"]
    assert validation["expression"] == "variables.changed.size() == 0"
    assert validation["messageExpression"].startswith(repr(MESSAGE_PREFIX))
    assert "object" not in validation["messageExpression"]  # paths only, never values
    # at most 50 paths (the API server drops messages over 5 KiB), then a count
    assert "transformList(i, p, i < 50, p)" in validation["messageExpression"]
    assert "' more'" in validation["messageExpression"]
    assert validation["message"].startswith("pod updates may change only metadata.selfLink")
    names = [v["name"] for v in spec["variables"]]
    assert names[-1] == "changed"
    for name in names[:-1]:
        assert f"variables.{name}" in spec["variables"][-1]["expression"]
    for variable in spec["variables"]:
        assert len(variable["expression"]) <= MAX_VARIABLE_LENGTH + 35_000
        assert "cel.bind" not in variable["expression"]  # not in the API server's library
    assert generated.binding["spec"]["policyName"] == generated.policy["metadata"]["name"]


@pytest.mark.parametrize(
    ("mode", "action"), [("enforce", "Deny"), ("warn", "Warn"), ("audit", "Audit")]
)
def test_mode_maps_to_validation_actions(schema: dict[str, Any], mode: Any, action: str) -> None:
    binding = generate(schema, Settings(mode=mode)).binding
    assert binding["spec"]["validationActions"] == [action]


def test_exemptions_follow_the_settings(schema: dict[str, Any]) -> None:
    settings = Settings(
        exempt_users=("alice", "o'brien"),
        exempt_groups=("ops",),
        exempt_namespaces=("kube-system", "tools"),
        namespace="guard",
    )
    spec = generate(schema, settings).policy["spec"]
    (selector,) = spec["matchConstraints"]["namespaceSelector"]["matchExpressions"]
    assert selector == {
        "key": "kubernetes.io/metadata.name",
        "operator": "NotIn",
        "values": ["guard", "kube-system", "tools"],
    }
    conditions = {c["name"]: c["expression"] for c in spec["matchConditions"]}
    assert "['alice', 'o\\'brien']" in conditions["not-exempt-user"]
    assert "['ops']" in conditions["not-exempt-group"]
    none = generate(schema, Settings(exempt_users=(), exempt_groups=())).policy["spec"]
    assert "matchConditions" not in none


def test_coverage_is_recorded_and_an_added_field_is_reported(schema: dict[str, Any]) -> None:
    policy = generate(schema, Settings()).policy
    annotations = policy["metadata"]["annotations"]
    covered = json.loads(annotations[FIELDS_ANNOTATION])
    assert "hostUsers" in covered[POD_SPEC]
    assert len(annotations[FINGERPRINT_ANNOTATION]) == 16
    assert uncovered_fields(schema, policy) == []

    newer = copy.deepcopy(schema)
    newer["components"]["schemas"][POD_SPEC]["properties"]["futureField"] = {"type": "string"}
    newer["components"]["schemas"][CONTAINER]["properties"]["futureKnob"] = {"type": "boolean"}
    assert uncovered_fields(newer, policy) == [
        f"{CONTAINER}.futureKnob",
        f"{POD_SPEC}.futureField",
    ]
    regenerated = generate(newer, Settings())
    assert (
        regenerated.policy["metadata"]["annotations"][FINGERPRINT_ANNOTATION]
        != (annotations[FINGERPRINT_ANNOTATION])
    )
    assert "[?'futureField']" in all_cel(regenerated)


def test_a_policy_without_the_annotation_cannot_be_checked(schema: dict[str, Any]) -> None:
    with pytest.raises(SchemaError, match="annotation"):
        uncovered_fields(schema, {"metadata": {"name": "hand-written"}})
    bad = {"metadata": {"annotations": {FIELDS_ANNOTATION: "[1]"}}}
    with pytest.raises(SchemaError, match="field list"):
        uncovered_fields(schema, bad)


def _tiny(spec_properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "components": {
            "schemas": {
                "io.k8s.api.core.v1.Pod": {
                    "type": "object",
                    "properties": {
                        "spec": {"allOf": [{"$ref": "#/components/schemas/Spec"}]},
                    },
                },
                "Spec": {"type": "object", "properties": spec_properties},
            }
        }
    }


@pytest.mark.parametrize(
    ("prop", "want"),
    [
        ({"type": "object", "x-kubernetes-preserve-unknown-fields": True}, "{a} == {b}"),
        ({"x-kubernetes-int-or-string": True, "type": "string"}, "{a} == {b}"),
        ({}, "{a} == {b}"),  # no type at all: compared whole
        ({"type": "integer"}, "{a} == {b}"),
        ({"type": "string"}, "{a}.orValue('') == {b}.orValue('')"),
        ({"type": "array", "items": {"type": "string"}}, "{a}.orValue([]) == {b}.orValue([])"),
        (
            {"type": "object", "additionalProperties": {"type": "integer"}},
            "{a}.orValue({{}}) == {b}.orValue({{}})",
        ),
        (
            {"type": "object", "additionalProperties": {"type": "string"}},
            "[dyn({a}.orValue({{}}))].all(",
        ),
        (
            {"type": "array", "items": {"type": "object", "properties": {"y": {"type": "string"}}}},
            "[dyn({a}.orValue([]))].all(",
        ),
    ],
)
def test_how_each_kind_of_schema_is_compared(prop: dict[str, Any], want: str) -> None:
    cel = all_cel(generate(_tiny({"x": prop}), Settings()))
    assert want.format(a="object[?'spec'][?'x']", b="oldObject[?'spec'][?'x']") in cel


def test_schema_errors() -> None:
    with pytest.raises(SchemaError, match=r"components\.schemas"):
        generate({"openapi": "3.0"}, Settings())
    broken = _tiny({"x": {"$ref": "#/components/schemas/Missing"}})
    with pytest.raises(SchemaError, match="Missing"):
        generate(broken, Settings())
    remote = _tiny({"x": {"$ref": "https://example.com/schema"}})
    with pytest.raises(SchemaError, match=r"\$ref"):
        generate(remote, Settings())


def test_the_packaged_schema_is_trimmed_and_stable(schema: dict[str, Any]) -> None:
    definitions = schema["components"]["schemas"]
    assert trim_schema(schema)["components"]["schemas"] == definitions
    assert schema["x-pod-replace-guard"]["kubernetesVersion"] == "v1.34.4"
    assert not any("description" in json.dumps(d) for d in definitions.values())
