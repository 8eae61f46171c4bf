"""The webhook entry the controller registers, built from the same settings the
server judges with: the namespaces and identities the API server skips before any
call are, by construction, the ones the webhook itself exempts. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Final

from webhook.settings import Settings

WEBHOOK_NAME: Final = "pods.pod-replace-guard.io"
# Set on the ValidatingWebhookConfiguration: a digest of the entry the controller
# last wrote (without the caBundle). The controller rewrites the entry only when its
# own settings give another digest (an upgrade), so a deliberate edit of the live
# entry (failurePolicy Ignore to break glass) stays until the settings change.
DIGEST_ANNOTATION: Final = "pod-replace-guard.io/entry-digest"
# When the controller that wrote the entry started (Unix time).
STARTED_ANNOTATION: Final = "pod-replace-guard.io/entry-writer-started"


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


def webhook_entry(settings: Settings, ca_bundle_b64: str) -> dict[str, Any]:
    """The ValidatingWebhook that sends pod UPDATEs in the judged namespaces to us."""
    if settings.webhook_url:
        client_config: dict[str, Any] = {"url": settings.webhook_url}
    else:
        client_config = {
            "service": {
                "namespace": settings.namespace,
                "name": settings.service,
                "path": "/validate",
                "port": 443,
            }
        }
    client_config["caBundle"] = ca_bundle_b64
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
