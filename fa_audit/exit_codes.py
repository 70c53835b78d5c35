"""The CI gate: every way fa-audit can end, as one public enum (README: exit codes)."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    TRUST = 0
    """Every check was assessed and passed."""
    WALK_BACK = 1
    """At least one check failed (for ``compare``: B regressed against A)."""
    INPUT_ERROR = 2
    """Usage error or invalid input."""
    INCOMPLETE = 3
    """Nothing failed, but a check was not assessed or a cosine was refused."""
    INTERNAL_ERROR = 4
    """A bug in fa-audit; never reported as 1."""
    INTERRUPTED = 130
    """Ctrl-C."""
    TERMINATED = 143
    """SIGTERM."""


_SEVERITY = (
    ExitCode.TRUST,
    ExitCode.INCOMPLETE,
    ExitCode.WALK_BACK,
    ExitCode.INPUT_ERROR,
    ExitCode.INTERNAL_ERROR,
    ExitCode.INTERRUPTED,
    ExitCode.TERMINATED,
)


def worst(codes: list[ExitCode]) -> ExitCode:
    """The exit code of several audits: a failure outranks an incomplete audit, which
    outranks a pass; input errors and bugs outrank every finding."""
    return max(codes, key=_SEVERITY.index, default=ExitCode.TRUST)
