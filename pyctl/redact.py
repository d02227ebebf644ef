"""Scrub known secret shapes from text and from event data before anything is written or shown.

Shapes: kubeadm bootstrap tokens, kubeadm certificate keys, PEM blocks (keys and certificates),
kubeconfig credential fields, bearer tokens and passwords in URLs. `no_log` results never carry
the secret in the first place (Ansible censors them); this is the second line of defence.
"""

from __future__ import annotations

import json
import re
from typing import Any

MASK = "<redacted>"

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # PEM blocks: private keys, certificates, CSRs.
    (
        re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----.*?(?:-----END \1-----|\Z)", re.DOTALL),
        rf"-----BEGIN \1-----{MASK}-----END \1-----",
    ),
    # Base64 of "-----BEGIN" (kubeconfig *-data fields and the like).
    (re.compile(r"LS0tLS1CRUdJTi[A-Za-z0-9+/=]*"), MASK),
    # kubeconfig credential fields.
    (
        re.compile(
            r"((?:client-key-data|client-certificate-data|certificate-authority-data)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+"
        ),
        rf"\1{MASK}",
    ),
    # kubeadm certificate keys are 64 hex characters. Digests and CA hashes carry a "sha256:" prefix
    # and are not secret; any other bare 64-hex string is treated as a key.
    (re.compile(r"(?<![0-9A-Fa-f:])(?<!sha256=)[0-9a-fA-F]{64}(?![0-9A-Fa-f])"), MASK),
    # kubeadm bootstrap token: [a-z0-9]{6}.[a-z0-9]{16}
    (re.compile(r"(?<![A-Za-z0-9])[a-z0-9]{6}\.[a-z0-9]{16}(?![A-Za-z0-9])"), MASK),
    # Bearer tokens.
    (re.compile(r"(\bBearer\s+)[A-Za-z0-9._~+/=-]{8,}"), rf"\1{MASK}"),
    # Passwords in URLs: scheme://user:password@host
    (re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]+:)[^@\s/]+@"), rf"\1{MASK}@"),
)


# Matches wherever any pattern above could match (a superset): text without a match is returned as it
# is after one search instead of seven substitutions, and a whole event is judged from its JSON text.
_MAYBE = re.compile(
    r"-----BEGIN |LS0tLS1CRUdJTi|client-key-data|client-certificate-data|certificate-authority-data"
    r"|[0-9a-fA-F]{64}|[a-z0-9]{6}\.[a-z0-9]{16}|Bearer|://[^/\s:@]+:[^@\s/]+@"
)


def scrub_text(text: str) -> str:
    """Return `text` with every known secret shape replaced by a mask."""
    if not text or not _MAYBE.search(text):
        return text
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def scrub(value: Any) -> Any:
    """Scrub strings anywhere inside nested dicts, lists and tuples (keys too); return the new value."""
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, (dict, list, tuple)) and _surely_clean(value):
        return value
    return _scrub_nested(value)


def _surely_clean(value: Any) -> bool:
    """True when not one string inside `value` can hold a secret shape: JSON escaping never removes
    the text any shape needs, so one search over the JSON text decides for the whole structure."""
    try:
        blob = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return False
    return not may_contain_secret(blob)


def _scrub_nested(value: Any) -> Any:
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, dict):
        return {scrub_text(k) if isinstance(k, str) else k: _scrub_nested(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub_nested(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_scrub_nested(v) for v in value)
    return value


def scrub_in_place(data: dict[str, Any]) -> None:
    """Scrub a dict in place (the runner writes the same object it hands to us)."""
    if _surely_clean(data):
        return
    cleaned = _scrub_nested(data)
    data.clear()
    data.update(cleaned)


def may_contain_secret(text: str) -> bool:
    """False when no known secret shape can be in `text` (one search; True may still be harmless)."""
    return _MAYBE.search(text) is not None


def scrub_to_json(value: Any, **dumps: Any) -> tuple[Any, str]:
    """`value` scrubbed and its JSON text (`json.dumps` keywords pass through). Serialized once when
    nothing in it can be a secret, and then `value` itself comes back."""
    text = json.dumps(value, **dumps)
    if not may_contain_secret(text):
        return value, text
    cleaned = _scrub_nested(value)
    return cleaned, json.dumps(cleaned, **dumps)


def contains_secret(text: str) -> bool:
    return scrub_text(text) != text
