"""What every output format renders, and the one small interface each implements."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from rich.console import Console

    from ..trajectories import Trajectory

Kind = Literal["report", "trajectory", "comparison"]


@dataclass(frozen=True)
class Result:
    """One command's result, as every format reads it."""

    kind: Kind
    document: Any
    """The JSON document: a report, a list of reports, or a comparison."""
    shown: Any
    """The same document with control characters escaped: what text formats print."""
    render: Callable[[Console], None]
    """The terminal view."""
    trajectory: Trajectory | None = None
    """The ordered trajectory of a list of reports."""


@dataclass(frozen=True)
class FileFormat:
    """An output written to the file its option names (``--<name> PATH``), atomically and
    never onto an input; ``-`` is standard output where ``to_stdout`` allows it."""

    name: str
    what: str
    """What it holds, for messages and help."""
    to_stdout: bool
    write: Callable[[Result], bytes]
    needs: str | None = None
    """A module it imports, checked before any audit runs (an extra the user may lack)."""

    @property
    def option(self) -> str:
        return f"--{self.name}"
