"""Where results go: the terminal, --json, --markdown, --format github and --plot.
Every command hands over the same four views of its result."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InputError
from .guard import make_console

if TYPE_CHECKING:
    from rich.console import Console


class Format(StrEnum):
    TABLE = "table"
    GITHUB = "github"


@dataclass(frozen=True)
class Outputs:
    json_out: str | None
    markdown: Path | None
    fmt: Format
    plot: Path | None
    quiet: bool
    no_color: bool

    def check(self) -> None:
        """Refuse impossible combinations before any audit runs."""
        if self.fmt is Format.GITHUB and self.json_out == "-":
            raise InputError("--format github writes annotations to stdout: give --json a file, not '-'")
        if self.plot is not None:
            from importlib.util import find_spec

            if find_spec("matplotlib") is None:
                raise InputError("--plot needs matplotlib, which is not installed: pip install 'fa-audit[plot]'")
        for path in (self.markdown, self.plot, None if self.json_out in (None, "-") else Path(self.json_out)):
            if path is not None and not path.parent.is_dir():
                raise InputError("cannot be written: its folder does not exist", path)

    @property
    def progress(self) -> bool:
        return sys.stdout.isatty() and not self.quiet and self.json_out != "-"


@dataclass(frozen=True)
class Views:
    """One result, four ways."""

    document: Any
    """What --json writes."""
    markdown: Callable[[], str]
    annotations: Callable[[], list[str]]
    plot: Callable[[Path], None]
    render: Callable[[Console], None]


def emit(views: Views, out: Outputs) -> None:
    from ..render.atomic import write_atomically
    from ..render.github import append_step_summary
    from ..render.json_report import dumps

    if out.json_out == "-":
        sys.stdout.write(dumps(views.document))
    elif out.json_out is not None:
        write_atomically(Path(out.json_out), dumps(views.document))
    if out.markdown is not None:
        write_atomically(out.markdown, views.markdown())
    if out.plot is not None:
        views.plot(out.plot)
    if out.fmt is Format.GITHUB:
        for line in views.annotations():
            sys.stdout.write(line + "\n")
        append_step_summary(views.markdown())
    if not out.quiet and out.json_out != "-":
        views.render(make_console(out.no_color or out.fmt is Format.GITHUB))


class progress:
    """A rich progress bar on a terminal; a no-op elsewhere."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __enter__(self) -> Callable[[int, int], None] | None:
        if not self.enabled:
            return None
        from rich.progress import Progress

        self.bar = Progress(transient=True)
        self.task = self.bar.add_task("auditing", total=None)
        self.bar.start()
        return lambda done, total: self.bar.update(self.task, completed=done, total=total)

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.bar.stop()
