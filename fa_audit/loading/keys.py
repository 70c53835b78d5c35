"""State-dict key names as training code leaves them: a prefix on every key (``module.``
from DataParallel or BioTorch, a Lightning attribute name, ``_orig_mod.`` from
torch.compile), and module names that differ from the adapter's (``--rename``)."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import TypeVar

from ..errors import InputError
from ..escape import printable

V = TypeVar("V")


@dataclass(frozen=True)
class Rename:
    """``--rename REGEX=REPLACEMENT``: ``re.sub`` on every state-dict and feedback key."""

    pattern: re.Pattern[str]
    replacement: str

    @classmethod
    def parse(cls, rule: str) -> Rename:
        pattern, sep, replacement = rule.partition("=")
        if not sep or not pattern:
            raise InputError(f"--rename {printable(rule)!r} is not of the form REGEX=REPLACEMENT")
        try:
            compiled = re.compile(pattern)
            compiled.sub(replacement, "")  # a bad group reference fails here, not mid-audit
        except re.error as exc:
            raise InputError(f"--rename {printable(rule)!r} is not a valid rule: {exc}") from None
        return cls(compiled, replacement)

    def __str__(self) -> str:
        return f"{self.pattern.pattern}={self.replacement}"


def rename(entries: Mapping[str, V], rules: list[Rename], what: str) -> dict[str, V]:
    """Apply the rules in order to every key; two keys that become one are an error."""
    out: dict[str, V] = {}
    for key, value in entries.items():
        new = key
        for rule in rules:
            new = rule.pattern.sub(rule.replacement, new)
        if new in out:
            raise InputError(f"--rename turns two {what} keys into {printable(new)!r}")
        out[new] = value
    return out


def shared_prefixes(keys: Collection[str]) -> list[str]:
    """``['module.', 'module.model.']`` when every key starts with them, shortest first."""
    if not keys:
        return []
    parts = [k.split(".") for k in keys]
    found: list[str] = []
    for depth in range(1, min(len(p) for p in parts)):
        heads = {".".join(p[:depth]) for p in parts}
        if len(heads) != 1:
            break
        found.append(heads.pop() + ".")
    return found


def strip_prefix(keys: Collection[str], expected: Collection[str]) -> str | None:
    """The prefix shared by every key whose removal makes the keys fit ``expected`` best;
    None when the keys fit best as they are."""
    want = set(expected)

    def fit(prefix: str) -> int:
        return sum(k.removeprefix(prefix) in want for k in keys)

    best = max(["", *shared_prefixes(keys)], key=fit)  # max keeps the first (shortest) on a tie
    return best if best and fit(best) > fit("") else None
