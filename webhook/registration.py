"""The webhook entry the controller registers, built from the same settings the
server judges with: the namespaces and identities the API server skips before any
call are, by construction, the ones the webhook itself exempts. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from webhook.review import (
    AdmissionReview,
    allowed_response,
    denied_response,
    parse_review,
    review_envelope,
)
from webhook.settings import Settings

WEBHOOK_NAME: Final = "pods.pod-replace-guard.io"
VALIDATE_PATH: Final = "/validate"
# The canary: a second entry, failurePolicy Ignore, that sends the controller's
# dry-run updates of one labelled ConfigMap in the webhook's namespace to the same
# target, beneath its path: <path>/canary/<token of the target>. The controller sends such a dry run
# with a fresh nonce in CANARY_ANNOTATION; if the API server's call gets through
# (network policy, firewall, client certificate: everything a TLS check from inside
# the cluster cannot see), the webhook refuses it with canary_message(token, nonce),
# and the controller knows the pods entry can be registered there with failurePolicy
# Fail. If it does not get through, Ignore lets the dry run pass and nothing is
# registered. The token ties the answer to the target (an API server still holding
# the canary's previous target answers with another), the nonce to this dry run.
CANARY_NAME: Final = "canary.pod-replace-guard.io"
# Beneath the pods entry's own path (VALIDATE_PATH, or PRG_WEBHOOK_URL's): proof of
# that path too, not only of the host.
CANARY_PATH: Final = VALIDATE_PATH + "/canary"
CANARY_LABEL: Final = "pod-replace-guard.io/canary"
CANARY_ANNOTATION: Final = "pod-replace-guard.io/canary-nonce"
CANARY_MESSAGE: Final = "pod-replace-guard canary: the API server reached the webhook"
_HEX = re.compile(r"[0-9a-f]{8,64}")


# Set on the ValidatingWebhookConfiguration: a digest of the entry the controller
# last wrote (without the caBundle). The controller rewrites the entry only when its
# own settings give another digest (an upgrade), so a deliberate edit of the live
# entry (failurePolicy Ignore to break glass) stays until the settings change.
DIGEST_ANNOTATION: Final = "pod-replace-guard.io/entry-digest"
# When the controller that wrote the entry started (Unix time).
STARTED_ANNOTATION: Final = "pod-replace-guard.io/entry-writer-started"


def canary_message(token: str, nonce: str) -> str:
    return f"{CANARY_MESSAGE} (target {token}, nonce {nonce})"


_CEL_ESCAPES: Final = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def cel_string(text: str) -> str:
    """A single-quoted CEL string literal, in ASCII, as Kubernetes' own examples write
    them. Not json.dumps: JSON writes a character beyond the BMP as a UTF-16 surrogate
    pair of \\u escapes, which CEL refuses (its \\u names a code point; surrogates are
    none), so the whole configuration would be refused."""
    out = []
    for char in text:
        code = ord(char)
        if char in _CEL_ESCAPES:
            out.append(_CEL_ESCAPES[char])
        elif 0x20 <= code < 0x7F:
            out.append(char)
        elif 0xD800 <= code <= 0xDFFF:
            raise ValueError("a lone surrogate has no CEL string literal")
        elif code > 0xFFFF:
            out.append(f"\\U{code:08x}")
        else:
            out.append(f"\\u{code:04x}")
    return "'" + "".join(out) + "'"


def _cel_list(items: tuple[str, ...]) -> str:
    return "[" + ", ".join(cel_string(item) for item in items) + "]"


def _client_config(settings: Settings, ca_bundle_b64: str, suffix: str = "") -> dict[str, Any]:
    """Where the API server calls us: the Service at VALIDATE_PATH, or PRG_WEBHOOK_URL;
    the canary's ``suffix`` appended to either (so a URL that misses /validate misses
    the canary's route too, and is never registered)."""
    if settings.webhook_url:
        url = urlsplit(settings.webhook_url)
        config: dict[str, Any] = {"url": urlunsplit(url._replace(path=url.path + suffix))}
    else:
        config = {
            "service": {
                "namespace": settings.namespace,
                "name": settings.service,
                "path": VALIDATE_PATH + suffix,
                "port": 443,
            }
        }
    config["caBundle"] = ca_bundle_b64
    return config


def webhook_entry(settings: Settings, ca_bundle_b64: str) -> dict[str, Any]:
    """The ValidatingWebhook that sends pod UPDATEs in the judged namespaces to us."""
    client_config = _client_config(settings, ca_bundle_b64)
    extra = json.loads(settings.namespace_selector) if settings.namespace_selector else {}
    # kubernetes.io/metadata.name is set by the API server and cannot be edited; the
    # webhook's own namespace is always left out, so a broken webhook can be repaired.
    excluded = list(dict.fromkeys((*settings.exempt_namespaces, settings.namespace)))
    selector: dict[str, Any] = {}
    if extra.get("matchLabels"):
        selector["matchLabels"] = extra["matchLabels"]
    selector["matchExpressions"] = [
        {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": excluded},
        *extra.get("matchExpressions", []),
    ]
    entry: dict[str, Any] = {
        "name": WEBHOOK_NAME,
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "failurePolicy": settings.failure_policy,
        "timeoutSeconds": settings.timeout_seconds,
        "matchPolicy": "Equivalent",
        "rules": [
            {
                "operations": ["UPDATE"],
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": ["pods", *(f"pods/{s}" for s in settings.judged_subresources)],
                "scope": "Namespaced",
            }
        ],
        # No objectSelector: pod labels are edited by the very users whose updates
        # are judged, so a label must not be a way to opt out.
        "namespaceSelector": selector,
        "clientConfig": client_config,
    }
    conditions = []
    # has() guards: an absent field must not be an evaluation error (refused under Fail).
    if settings.exempt_users:
        conditions.append(
            {
                "name": "not-exempt-user",
                "expression": "!has(request.userInfo.username) || "
                f"!(request.userInfo.username in {_cel_list(settings.exempt_users)})",
            }
        )
    if settings.exempt_groups:
        conditions.append(
            {
                "name": "not-exempt-group",
                "expression": "!has(request.userInfo.groups) || "
                f"!request.userInfo.groups.exists(g, g in {_cel_list(settings.exempt_groups)})",
            }
        )
    if conditions:
        entry["matchConditions"] = conditions
    return entry


def entry_digest(entry: dict[str, Any]) -> str:
    """The digest of an entry without its caBundle (DIGEST_ANNOTATION)."""
    config = {k: v for k, v in entry["clientConfig"].items() if k != "caBundle"}
    canonical = json.dumps({**entry, "clientConfig": config}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def canary_token(settings: Settings) -> str:
    """Names the pods entry's target (Service or URL, not the caBundle) and the
    namespace the canary's ConfigMap is in."""
    target = {"clientConfig": _client_config(settings, ""), "namespace": settings.namespace}
    return hashlib.sha256(json.dumps(target, sort_keys=True).encode()).hexdigest()[:16]


def canary_entry(settings: Settings, ca_bundle_b64: str) -> dict[str, Any]:
    """The canary's ValidatingWebhook (CANARY_NAME). Every field the API server would
    default is set, so the entry read back compares equal to this one."""
    return {
        "name": CANARY_NAME,
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        # Never refuses anything it cannot reach: a broken path must not block updates
        # of the ConfigMap, nor anything else.
        "failurePolicy": "Ignore",
        # As long as the pods entry gets: a path slower than that must not pass.
        "timeoutSeconds": settings.timeout_seconds,
        "matchPolicy": "Equivalent",
        "rules": [
            {
                "operations": ["UPDATE"],
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": ["configmaps"],
                "scope": "Namespaced",
            }
        ],
        "namespaceSelector": {
            "matchExpressions": [
                {
                    "key": "kubernetes.io/metadata.name",
                    "operator": "In",
                    "values": [settings.namespace],
                }
            ]
        },
        "objectSelector": {"matchLabels": {CANARY_LABEL: "true"}},
        # Only the controller's probes: a dry run carrying the nonce annotation. Anyone
        # else's update of the ConfigMap, dry runs included (Flux and `kubectl diff`
        # dry-run every object they apply), is never sent.
        "matchConditions": [
            {
                "name": "controller-probe",
                "expression": "has(request.dryRun) && request.dryRun"
                " && has(object.metadata.annotations)"
                f" && {cel_string(CANARY_ANNOTATION)} in object.metadata.annotations",
            }
        ],
        "clientConfig": _client_config(
            settings, ca_bundle_b64, f"/canary/{canary_token(settings)}"
        ),
    }


def answer_canary(body: object, token: str) -> AdmissionReview:
    """The answer at CANARY_PATH/<token>: the controller's probe (a dry run carrying a
    nonce in CANARY_ANNOTATION) is refused with canary_message(token, nonce), which is
    the proof the controller looks for; anything else is allowed, so no one else's
    update or dry run of the ConfigMap is ever refused. Raises MalformedReview like
    answer_review."""
    api_version, request = parse_review(body)
    uid = request["uid"]
    annotations = ((request.get("object") or {}).get("metadata") or {}).get("annotations")
    nonce = annotations.get(CANARY_ANNOTATION) if isinstance(annotations, dict) else None
    if (
        request.get("dryRun") is True
        and isinstance(nonce, str)
        and _HEX.fullmatch(nonce)
        and _HEX.fullmatch(token)
    ):
        response = denied_response(uid, canary_message(token, nonce))
    else:
        response = allowed_response(uid)
    return review_envelope(api_version, response)
