"""Text from files (keys, meta strings, module and file names) reaches a terminal or a
CI log only through :func:`printable`: control characters are escaped, so a file can
neither move the cursor, retitle the window, hide text, nor forge a workflow command."""

from __future__ import annotations

import unicodedata
from typing import Any


def _escape(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with every control and format character (C0, C1, bidi overrides, line
    and paragraph separators) escaped, and the lone surrogates a non-UTF-8 file name decodes to,
    and ``::`` broken so that no printed line can start a GitHub workflow command."""
    out = "".join(_escape(ch) if unicodedata.category(ch) in {"Cc", "Cf", "Zl", "Zp", "Cs"} else ch for ch in text)
    return out.replace("::", ":\u200b:")  # a zero-width space: reads the same, commands nothing


def short(value: object, limit: int = 60) -> str:
    """A value quoted in an error message: its repr, escaped and cut to ``limit`` characters."""
    text = printable(repr(value))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def printable_doc(value: Any) -> Any:
    """A JSON-shaped document with every string in it (keys too) made :func:`printable`:
    what the terminal, Markdown and GitHub renderers read. ``--json`` keeps the originals."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {printable(str(k)): printable_doc(v) for k, v in value.items()}
    if isinstance(value, list):
        return [printable_doc(v) for v in value]
    return value
