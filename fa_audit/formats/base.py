"""What every output format renders, and the one small interface each implements."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from rich.console import Console

    from ..report.trajectories import Trajectory

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
    kinds: tuple[str, ...] = ()
    """File kinds it writes by the target's extension (the first without one); ``write`` then
    takes the kind as its second argument. Empty: one kind."""

    def kind_of(self, target: str) -> str | None:
        """The kind ``target``'s extension names; None where it names one this format cannot write."""
        suffix = target.rpartition(".")[2].lower() if "." in target.rpartition("/")[2] else ""
        if not suffix:
            return self.kinds[0]
        return suffix if suffix in self.kinds else None

    def output(self, result: Result, target: str) -> bytes:
        """``result`` as the bytes ``target`` should hold."""
        if not self.kinds:
            return self.write(result)
        writer: Callable[[Result, str], bytes] = self.write  # type: ignore[assignment]
        return writer(result, self.kind_of(target) or self.kinds[0])

    @property
    def option(self) -> str:
        return f"--{self.name}"


def by_kind(
    result: Result,
    report: Callable[[Any], str],
    trajectory: Callable[[Trajectory, Any], str],
    comparison: Callable[[Any], str],
) -> str:
    """A text format's document for ``result``: one renderer per kind of result."""
    if result.kind == "report":
        return report(result.shown)
    if result.kind == "trajectory":
        assert result.trajectory is not None
        return trajectory(result.trajectory, result.shown)
    return comparison(result.shown)
