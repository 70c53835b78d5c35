"""Keyed reports for CI: with ``FA_AUDIT_REPORT_KEY`` set, every JSON report written carries
an HMAC-SHA256 of its canonical form (sorted keys, no spaces, the ``hmac`` field left out),
and a report read back is refused unless its HMAC verifies with the same key. A report
edited after it was written (a loosened threshold, a status set to pass) then cannot pass
as the tool's."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import Any

from ..errors import InputError

KEY_VARIABLE = "FA_AUDIT_REPORT_KEY"


def _key() -> bytes | None:
    """The key, None when the variable is unset; set but empty is an error, never "no key": a
    fork's pull request or a misnamed secret gives an empty one, and verification must not then
    switch itself off."""
    value = os.environ.get(KEY_VARIABLE)
    if value is None:
        return None
    if not value.strip():
        raise InputError(
            f"{KEY_VARIABLE} is set but empty (a secret a fork's pull request cannot read, or a misnamed one): "
            "give the key, or unset the variable to write and read unkeyed reports"
        )
    return value.encode()


def _mac(key: bytes, report: dict[str, Any]) -> str:
    body = {k: v for k, v in report.items() if k != "hmac"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    return hmac.new(key, canonical, hashlib.sha256).hexdigest()


def signed(document: Any) -> Any:
    """``document`` (a report, or a list of them) with each report's HMAC, when a key is set."""
    key = _key()
    if key is None:
        return document
    if isinstance(document, list):
        return [signed(d) for d in document]
    if isinstance(document, dict) and "schema_version" in document:
        return {**document, "hmac": _mac(key, document)}
    return document


def verify(report: dict[str, Any], path: Path, required: bool = False) -> bool:
    """Refuse a report whose HMAC does not verify, when a key is set (and every report when
    none is but ``required``); whether it was verified."""
    key = _key()
    if key is None:
        if required:
            raise InputError(f"cannot be verified: --require-key is given and {KEY_VARIABLE} is not set", path)
        return False
    stated = report.get("hmac")
    if not isinstance(stated, str):
        raise InputError(f"holds a report with no HMAC, and {KEY_VARIABLE} is set: only keyed reports are read", path)
    if not hmac.compare_digest(stated, _mac(key, report)):
        raise InputError(
            f"holds a report whose HMAC does not verify with {KEY_VARIABLE}: it was changed after it was written, "
            "or written with another key",
            path,
        )
    return True
