"""State-dict key names as training code leaves them: a prefix on every key (``module.``
from DataParallel or BioTorch, a Lightning attribute name, ``_orig_mod.`` from
torch.compile), a wrapper's ``module`` or ``_orig_mod`` inside keys where a submodule alone was wrapped,
and module names that differ from the adapter's (``--rename``)."""

from __future__ import annotations

import re
import re._constants as sre_constants  # type: ignore[import-not-found]  # a parsed pattern, to bound matching
import re._parser as sre_parse  # type: ignore[import-not-found]
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

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
            problem = _backtracking(sre_parse.parse(pattern).data)
        except (re.error, OverflowError, RecursionError) as exc:
            raise InputError(f"--rename {printable(rule)!r} is not a valid rule: {exc}") from None
        if problem is not None:
            raise InputError(f"--rename {printable(rule)!r} is refused: {problem}")
        return cls(compiled, replacement)

    def __str__(self) -> str:
        return f"{self.pattern.pattern}={self.replacement}"


MAX_REPEAT_COUNT = 1000


def _backtracking(nodes: Any, inside_repeat: bool = False) -> str | None:
    """Why the pattern could take exponential time to match (Python's ``re`` has no time
    limit), or None: a repeat that can match a variable number of times holding another
    such repeat or an alternation (``(a+)+``, ``(a|a)*``), or a repeat count above
    MAX_REPEAT_COUNT. Rename rules need neither."""
    for op, arg in nodes:
        if op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT, sre_constants.POSSESSIVE_REPEAT):
            low, high, body = arg
            bounded = high is not sre_constants.MAXREPEAT
            if max(low, high if bounded else 0) > MAX_REPEAT_COUNT:
                return f"a repeat count above {MAX_REPEAT_COUNT}"
            variable = high != low
            if variable and inside_repeat:
                return "a repeat inside a repeat can take exponential time to match; write it without nesting"
            found = _backtracking(body.data if hasattr(body, "data") else body, inside_repeat or variable)
            if found:
                return found
        elif op is sre_constants.BRANCH:
            if inside_repeat:
                return "an alternation inside a repeat can take exponential time to match; write it without nesting"
            for branch in arg[1]:
                found = _backtracking(branch.data if hasattr(branch, "data") else branch, inside_repeat)
                if found:
                    return found
        elif op in (sre_constants.SUBPATTERN, sre_constants.ASSERT, sre_constants.ASSERT_NOT):
            body = arg[-1]
            found = _backtracking(body.data if hasattr(body, "data") else body, inside_repeat)
            if found:
                return found
    return None


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


def subtree_prefixes(keys: Collection[str], expected: Collection[str]) -> dict[str, int]:
    """The prefixes under which some key ends in an ``expected`` key (wrappers' components inside
    it aside), each with the number of keys under it: where a copy of the network may sit in a state
    dict that holds more than it (a LightningModule's ``model.`` beside its EMA copy's ``ema.module.``),
    in the order first found. Only a key's last components are tried, as many as the longest
    expected key has, twice: the work is linear in the keys, whatever a file holds."""
    wanted = set(expected)
    longest = 2 * max((k.count(".") + 1 for k in wanted), default=0)
    heads: list[list[str]] = []
    found: dict[str, int] = {}
    for key in keys:
        parts = key.split(".")
        reach = range(max(1, len(parts) - longest), len(parts))
        heads.append([".".join(parts[:i]) + "." for i in reach])
        for i in reach:
            rest = parts[i:]
            if ".".join(rest) in wanted or ".".join(p for p in rest if p not in WRAPPERS) in wanted:
                found.setdefault(".".join(parts[:i]) + ".", 0)
    for under in heads:
        for head in under:
            if head in found:
                found[head] += 1
    return found


WRAPPERS = ("module", "_orig_mod")
"""The attributes a wrapper keeps the wrapped module in: DataParallel's and DistributedDataParallel's,
torch.compile's."""


def unwrapped(entries: Mapping[str, V]) -> dict[str, V] | None:
    """The keys without the :data:`WRAPPERS` components that a submodule wrapped alone leaves
    inside them: the PyTorch ImageNet example, and the sign-symmetry code after it, wrap an
    AlexNet's or a VGG's ``features`` in DataParallel (``features.module.0.weight``); a compiled
    block reads ``blocks.0._orig_mod.fc.weight``. None when two keys would become one."""
    out = {".".join(p for p in key.split(".") if p not in WRAPPERS): value for key, value in entries.items()}
    return out if len(out) == len(entries) else None


def wrappers_in(keys: Collection[str]) -> list[str]:
    """The :data:`WRAPPERS` components that occur in ``keys``."""
    return [w for w in WRAPPERS if any(w in key.split(".") for key in keys)]


AVERAGED_COUNTER = "n_averaged"


def averaged_counters(keys: Collection[str]) -> list[str]:
    """The keys of torch's AveragedModel's (SWA, EMA) counter of averaged steps: ``n_averaged``
    beside the ``module.`` it averages. An integer, not a weight of the network."""
    return [
        k
        for k in keys
        if k.rsplit(".", 1)[-1] == AVERAGED_COUNTER
        and any(o.startswith(k.removesuffix(AVERAGED_COUNTER) + "module.") for o in keys)
    ]
