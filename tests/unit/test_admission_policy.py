"""webhook.admission_policy: the policy generated from the rule list and a pod schema.

What the CEL decides is tested against a real API server (tests/e2e/
test_policy_equivalence.py); here: that every frozen field of the schema is compared
and no free one is, that the rule list is the only source, the scope, the exemptions,
the modes, the schema handling and the coverage report.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest

from webhook import admission_policy
from webhook.admission_policy import (
    FIELDS_ANNOTATION,
    FINGERPRINT_ANNOTATION,
    LOOSE_PATHS,
    MAX_POSITIONS,
    MAX_VARIABLE_LENGTH,
    MESSAGE_PREFIX,
    VARIANT_ANNOTATION,
    VARIANT_POSITIONS,
    VARIANT_TWO_VARIABLE,
    VARIANTS,
    SchemaError,
    VersionError,
    generate,
    installed_variant,
    trim_schema,
    uncovered_fields,
    variant_for,
    variant_runs_on,
)
from webhook.policy_command import packaged_schema
from webhook.rules import SERVER_MANAGED_PATHS, UPDATABLE_PATHS
from webhook.settings import Settings

POD_SPEC = "io.k8s.api.core.v1.PodSpec"
OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
CONTAINER = "io.k8s.api.core.v1.Container"
POD_SECURITY = "io.k8s.api.core.v1.PodSecurityContext"


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return packaged_schema()


def expressions(generated: admission_policy.Generated) -> dict[str, str]:
    return {v["name"]: v["expression"] for v in generated.policy["spec"]["variables"]}


def all_cel(generated: admission_policy.Generated) -> str:
    return "\n".join(expressions(generated).values())


_COMPARED = re.compile(r"\[([^\[\]]*)\]\.filter\(k, (\S+)\[\?k\] != (\S+)\[\?k\]\)")


def compared_whole(cel: str) -> dict[str, set[str]]:
    """For each object the policy reads (``object.?spec``), the fields it compares whole
    (listed, then ``.filter(k, object.?spec[?k] != oldObject.?spec[?k])``)."""
    found: dict[str, set[str]] = {}
    for names, new, old in _COMPARED.findall(cel):
        assert old == new.replace("object", "oldObject", 1) or old.startswith("r")
        found.setdefault(new, set()).update(re.findall(r"'([^']+)'", names))
    return found


def test_every_frozen_spec_and_metadata_field_is_compared_whole(schema: dict[str, Any]) -> None:
    """Each frozen field exactly once: in its object's list (one native equality for the
    whole subtree), or in its own term when the rules or LOOSE_PATHS descend into it."""
    cel = all_cel(generate(schema, Settings()))
    whole = compared_whole(cel)
    properties = schema["components"]["schemas"]
    free = {path for path in UPDATABLE_PATHS + SERVER_MANAGED_PATHS if "[*]" not in path}
    own_term = {"spec.containers", "spec.initContainers", "spec.volumes", "spec.affinity",
                "spec.nodeSelector", "metadata.finalizers"}  # fmt: skip
    checked = 0
    for parent, definition in (("spec", POD_SPEC), ("metadata", OBJECT_META)):
        listed = whole[f"object.?{parent}"]
        for name in properties[definition]["properties"]:
            path = f"{parent}.{name}"
            if path in free:
                assert name not in listed, f"{path} is free but compared"
                assert f"object.?{parent}.?{name}" not in cel
            elif path in own_term:
                assert name not in listed
                assert f"object.?{parent}.?{name}" in cel, f"{path} has no term"
            else:
                assert name in listed, f"{path} is frozen but not compared"
                checked += 1
    assert checked >= 40
    assert whole["object"] == {"apiVersion", "kind"}
    # affinity: descended only to reach nodeAffinity
    assert whole["object.?spec.?affinity"] == {"podAffinity", "podAntiAffinity"}


def test_containers_are_matched_by_position_with_only_the_image_free(
    schema: dict[str, Any],
) -> None:
    variables = expressions(generate(schema, Settings()))
    container_fields = set(schema["components"]["schemas"][CONTAINER]["properties"])
    for variable, kind in (
        ("changedSpecContainers", "containers"),
        ("changedSpecInitContainers", "initContainers"),
    ):
        cel = variables[variable]
        # unchanged lists cost one equality
        assert cel.split("\n")[1] == (f"object.?spec.?{kind} == oldObject.?spec.?{kind} ? [] :")
        assert f"['spec.{kind}']" in cel  # a length change names the list
        assert ".transformList(" in cel
        (item, *more) = [base for base in compared_whole(cel) if base.startswith("v")]
        assert not more
        assert compared_whole(cel)[item] == container_fields - {"image"}
        assert f".map(k, 'spec.{kind}[' + string(" in cel  # each field by its index


def test_free_fields_and_server_managed_fields_are_never_read(schema: dict[str, Any]) -> None:
    cel = all_cel(generate(schema, Settings()))
    everything = set().union(*compared_whole(cel).values())
    for name in ("labels", "annotations", "managedFields", "status", "tolerations",
                 "activeDeadlineSeconds", "generation", "resourceVersion"):  # fmt: skip
        assert name not in everything
        assert f".?{name}" not in cel
        assert f"'{name}'" not in cel


def test_the_rule_list_is_the_only_source(
    schema: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Making a field updatable in the rules drops it from the policy; nothing else
    lists frozen fields."""
    assert "nodeName" in compared_whole(all_cel(generate(schema, Settings())))["object.?spec"]
    monkeypatch.setattr(admission_policy, "UPDATABLE_PATHS", (*UPDATABLE_PATHS, "spec.nodeName"))
    spec = compared_whole(all_cel(generate(schema, Settings())))["object.?spec"]
    assert "nodeName" not in spec
    assert "hostname" in spec
    # a rule below a frozen field makes the policy descend into it
    monkeypatch.setattr(
        admission_policy, "UPDATABLE_PATHS", (*UPDATABLE_PATHS, "spec.securityContext.sysctls")
    )
    whole = compared_whole(all_cel(generate(schema, Settings())))
    assert "securityContext" not in whole["object.?spec"]
    assert "runAsUser" in whole["object.?spec.?securityContext"]
    assert "sysctls" not in whole["object.?spec.?securityContext"]


def test_finalizers_may_only_be_removed_from_a_pod_being_deleted(schema: dict[str, Any]) -> None:
    metadata = expressions(generate(schema, Settings()))["changedMetadata"]
    assert "oldObject.?metadata.?deletionTimestamp.orValue('') != ''" in metadata
    # multiset: each finalizer at most as often as before
    assert "fn.filter(g, g == f).size() <= fo.filter(g, g == f).size()" in metadata
    assert "['metadata.finalizers']" in metadata


def test_empty_equals_absent_only_where_the_api_server_lets_the_two_through(
    schema: dict[str, Any],
) -> None:
    """LOOSE_PATHS get the webhook's semantics (absent, null, {}, [] and "" equal at
    every depth) after a whole-value equality; every other field is compared whole."""
    assert set(LOOSE_PATHS) == {
        "spec.nodeSelector",
        "spec.affinity.nodeAffinity",
        "spec.volumes[*].projected.sources",
    }
    cel = all_cel(generate(schema, Settings()))
    nodes = "object.?spec.?affinity.?nodeAffinity"
    old_nodes = "old" + nodes[0].upper() + nodes[1:]
    assert (
        f"({nodes} == {old_nodes} || [{nodes}.orValue(null), {old_nodes}.orValue(null)]"
        ".all(e, e == null || size(e) == 0) ? [] : ['spec.affinity.nodeAffinity'])"
    ) in cel
    # a string map: whole, or else a key with "" equals no key
    assert "(object.?spec.?nodeSelector == oldObject.?spec.?nodeSelector || " in cel
    assert re.search(r"(\w+)\[\?(\w+)\]\.orValue\(''\) == (\w+)\[\2\]", cel)
    # null, [] and absent alike for projected sources, item by item
    assert re.search(
        r"\[v\d+\.\?projected\.\?sources\.orValue\(null\), "
        r"r\d+\[i\d+\]\.\?projected\.\?sources\.orValue\(null\)\]\.all\(e, ",
        cel,
    )
    assert "'spec.volumes[' + string(i" in cel
    # nowhere else: every other frozen field is in a list compared whole
    assert cel.count("(here, not beneath)") == 3
    assert cel.count(".orValue(null)") == 4
    assert "ofNonZeroValue" not in cel  # not a zero value: a typed empty object (1.37)


def test_every_term_says_what_it_compares_and_the_policy_is_small(
    schema: dict[str, Any],
) -> None:
    generated = generate(schema, Settings())
    variables = expressions(generated)
    assert list(variables) == [
        "changedApiVersionKind",
        "changedMetadata",
        "changedSpec",
        "changedSpecContainers",
        "changedSpecInitContainers",
        "changedSpecVolumes",
        "changed",
    ]
    total = 0
    for name, cel in variables.items():
        total += len(cel.encode())
        if name == "changed":
            continue
        assert cel.startswith("// "), name
        terms = cel.split("\n+ ")
        assert all(term.startswith("// ") for term in terms), name
        assert cel.count("(") == cel.count(")")
        assert cel.count("[") == cel.count("]")
        assert not any(line != line.rstrip() for line in cel.splitlines())  # YAML | blocks
        assert len(cel.encode()) <= 8_000, name
    # the form of issue 25: from 137 KB (every leaf behind optional lookups) to this
    assert total <= 16_000


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
    assert "futureField" in compared_whole(all_cel(regenerated))["object.?spec"]
    # A field added beneath a subtree compared whole is compared already (one equality
    # of the whole securityContext): nothing to report, the fingerprint unchanged.
    deeper = copy.deepcopy(schema)
    deeper["components"]["schemas"][POD_SECURITY]["properties"]["futureKnob"] = {"type": "string"}
    assert uncovered_fields(deeper, policy) == []
    assert POD_SECURITY not in covered


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


LOOSE = "({a} == {b} || [{a}.orValue(null), {b}.orValue(null)].all(e, e == null || size(e) == 0) ? "


@pytest.mark.parametrize(
    ("prop", "want"),
    [
        ({"type": "object", "x-kubernetes-preserve-unknown-fields": True}, "({a} == {b} ? "),
        ({"x-kubernetes-int-or-string": True, "type": "string"}, "({a} == {b} ? "),
        ({}, "({a} == {b} ? "),  # no type at all: compared whole
        ({"type": "integer"}, "({a} == {b} ? "),  # 0 is not absent
        ({"type": "boolean"}, "({a} == {b} ? "),  # nor is false
        ({"type": "string"}, LOOSE),
        ({"type": "array", "items": {"type": "string"}}, LOOSE),
        ({"type": "object", "additionalProperties": {"type": "integer"}}, LOOSE),
        ({"type": "object", "properties": {"y": {"type": "string"}}}, LOOSE),
        (
            {"type": "object", "additionalProperties": {"type": "string"}},
            "({a} == {b} || [dyn([{a}.orValue({{}})].map(e, e == null ? {{}} : e)[0])].all(",
        ),
    ],
)
def test_how_each_kind_of_schema_is_compared(
    prop: dict[str, Any], want: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Frozen: one equality, whatever the kind. Loose: absent and empty alike, by kind."""
    a, b = "object.?spec.?x", "oldObject.?spec.?x"
    frozen = all_cel(generate(_tiny({"x": prop}), Settings()))
    assert compared_whole(frozen) == {"object.?spec": {"x"}}
    monkeypatch.setattr(admission_policy, "LOOSE_PATHS", {"spec.x": "a test"})
    loose = all_cel(generate(_tiny({"x": prop}), Settings()))
    assert compared_whole(loose) == {}
    assert want.format(a=a, b=b) in loose
    assert '// spec.x: absent, null, {}, [] and "" alike (here, not beneath),' in loose
    assert "// as a test" in loose


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


# --- the variants ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "variant"),
    [
        ("v1.30.0", VARIANT_POSITIONS),
        ("1.31", VARIANT_POSITIONS),
        ("v1.32.13-eks-1", VARIANT_POSITIONS),
        ("v1.33.0", VARIANT_TWO_VARIABLE),
        ("1.37.2", VARIANT_TWO_VARIABLE),
        ("v2.0.0", VARIANT_TWO_VARIABLE),
    ],
)
def test_the_variant_is_the_newest_the_version_compiles(version: str, variant: str) -> None:
    assert variant_for(version) == variant


@pytest.mark.parametrize("version", ["v1.29.9", "1.8", "", "1", "latest", "v1.30.x"])
def test_versions_no_variant_runs_on_are_refused(version: str) -> None:
    with pytest.raises(VersionError):
        variant_for(version)


def test_the_variants_compare_the_same_fields_with_the_same_terms(schema: dict[str, Any]) -> None:
    """Same rule list, same schema: the same coverage and fields compared whole; only
    how a list is walked by position differs."""
    newest = generate(schema, Settings(), variant=VARIANT_TWO_VARIABLE)
    oldest = generate(schema, Settings(), variant=VARIANT_POSITIONS)
    assert oldest.covered == newest.covered
    assert oldest.groups == newest.groups
    old_meta, new_meta = oldest.policy["metadata"], newest.policy["metadata"]
    assert (
        old_meta["annotations"][FINGERPRINT_ANNOTATION]
        == (new_meta["annotations"][FINGERPRINT_ANNOTATION])
    )
    assert old_meta["annotations"][VARIANT_ANNOTATION] == VARIANT_POSITIONS
    assert new_meta["annotations"][VARIANT_ANNOTATION] == VARIANT_TWO_VARIABLE

    def whole(generated: admission_policy.Generated) -> list[set[str]]:
        return sorted(compared_whole(all_cel(generated)).values(), key=sorted)

    assert whole(oldest) == whole(newest)
    old_vars, new_vars = expressions(oldest), expressions(newest)
    assert list(old_vars) == ["digits", *new_vars]

    def unnumbered(cel: str) -> str:  # the generator numbers its CEL variables (m9, k11)
        return re.sub(r"\b([a-z])\d+\b", r"\1", cel)

    for name in ("changedApiVersionKind", "changedMetadata", "changedSpec", "changed"):
        assert unnumbered(old_vars[name]) == unnumbered(new_vars[name]), name
    assert ".transformList(" not in json.dumps(oldest.policy)
    assert "variables.digits" not in old_vars["changed"]


def test_the_positions_variant_counts_with_three_digits(schema: dict[str, Any]) -> None:
    generated = generate(schema, Settings(), variant=VARIANT_POSITIONS)
    variables = expressions(generated)
    digits = variables["digits"]
    assert digits.startswith("// The numbers 0 to 99")
    assert json.loads(re.sub(r"//[^\n]*\n", "", digits)) == list(range(100))
    for variable, kind in (
        ("changedSpecContainers", "containers"),
        ("changedSpecInitContainers", "initContainers"),
        ("changedSpecVolumes", "volumes"),
    ):
        cel = variables[variable]
        assert cel.split("\n")[1] == (f"object.?spec.?{kind} == oldObject.?spec.?{kind} ? [] :")
        # a length change names the list, and so does a list too long to count
        assert f"> {MAX_POSITIONS} ? ['spec.{kind}']" in cel
        assert cel.count("variables.digits") == 3  # three digits of a position
        assert f".map(k, 'spec.{kind}[' + string(" in cel  # each field by its index
    (validation,) = generated.policy["spec"]["validations"]
    assert (
        "variables.digits.filter(i, i < 50 && i < variables.changed.size())"
        in (validation["messageExpression"])
    )


def test_an_unknown_variant_is_refused(schema: dict[str, Any]) -> None:
    with pytest.raises(VersionError):
        generate(schema, Settings(), variant="v1.0+")
    assert list(VARIANTS) == [VARIANT_TWO_VARIABLE, VARIANT_POSITIONS]  # newest first


def test_an_installed_policy_tells_its_variant_and_where_it_runs(schema: dict[str, Any]) -> None:
    oldest = generate(schema, Settings(), variant=VARIANT_POSITIONS).policy
    newest = generate(schema, Settings(), variant=VARIANT_TWO_VARIABLE).policy
    assert installed_variant(oldest) == VARIANT_POSITIONS
    assert installed_variant(newest) == VARIANT_TWO_VARIABLE
    unrecorded = copy.deepcopy(newest)  # generated before variants were recorded
    del unrecorded["metadata"]["annotations"][VARIANT_ANNOTATION]
    assert installed_variant(unrecorded) == VARIANT_TWO_VARIABLE
    unknown = copy.deepcopy(newest)
    unknown["metadata"]["annotations"][VARIANT_ANNOTATION] = "v9.9+"
    with pytest.raises(SchemaError):
        installed_variant(unknown)
    assert variant_runs_on(VARIANT_POSITIONS, "v1.30.0")
    assert variant_runs_on(VARIANT_POSITIONS, "v1.37.2")  # an upgraded cluster keeps it
    assert not variant_runs_on(VARIANT_TWO_VARIABLE, "v1.32.13")
    assert variant_runs_on(VARIANT_TWO_VARIABLE, "v1.33.0")
