"""Where results go: the terminal, --json, --markdown, --format github and --plot.
Every command hands over the same four views of its result."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InputError
from ..render.output_file import STDOUT, check_writable, same_file, write_output, write_stdout
from .guard import make_console

if TYPE_CHECKING:
    from rich.console import Console


class Format(StrEnum):
    TABLE = "table"
    GITHUB = "github"


@dataclass(frozen=True)
class Outputs:
    json_out: str | None
    markdown: str | None
    fmt: Format
    plot: str | None
    quiet: bool
    no_color: bool

    def files(self) -> dict[str, str]:
        """Every output path by the option that names it (standard output left out)."""
        named = {"--json": self.json_out, "--markdown": self.markdown, "--plot": self.plot}
        if self.fmt is Format.GITHUB and os.environ.get("GITHUB_STEP_SUMMARY") is not None:
            named["GITHUB_STEP_SUMMARY"] = os.environ["GITHUB_STEP_SUMMARY"]
        return {option: target for option, target in named.items() if target is not None and target != STDOUT}

    def check(self, inputs: Iterable[Path] = ()) -> None:
        """Refuse impossible outputs before any audit runs, and outputs that would
        overwrite an input (checked again against every file the audit read)."""
        to_stdout = [o for o, t in (("--json", self.json_out), ("--markdown", self.markdown)) if t == STDOUT]
        if self.plot == STDOUT:
            raise InputError("--plot writes a PNG image: give it a file, not '-'")
        if len(to_stdout) > 1:
            raise InputError("only one of --json and --markdown can write to standard output ('-')")
        if self.fmt is Format.GITHUB and to_stdout:
            raise InputError(f"--format github writes annotations to stdout: give {to_stdout[0]} a file, not '-'")
        if self.plot is not None:
            from importlib.util import find_spec

            if find_spec("matplotlib") is None:
                raise InputError("--plot needs matplotlib, which is not installed: pip install 'fa-audit[plot]'")
        files = self.files()
        for option, target in files.items():
            check_writable(target, option)
        self.refuse_overlap(inputs)

    def refuse_overlap(self, inputs: Iterable[Path]) -> None:
        files = list(self.files().items())
        for i, (option, target) in enumerate(files):
            for other, other_target in files[i + 1 :]:
                if same_file(Path(target), Path(other_target)):
                    raise InputError(f"{option} and {other} name the same file; give each its own", Path(target))
            for source in inputs:
                if same_file(Path(target), source):
                    raise InputError(
                        f"is an input of this audit ({source}); {option} would overwrite it: choose another path",
                        Path(target),
                    )

    @property
    def stdout_taken(self) -> bool:
        return STDOUT in (self.json_out, self.markdown)

    @property
    def progress(self) -> bool:
        return sys.stdout.isatty() and not self.quiet and not self.stdout_taken


@dataclass(frozen=True)
class Views:
    """One result, four ways."""

    document: Any
    """What --json writes."""
    markdown: Callable[[], str]
    annotations: Callable[[], list[str]]
    plot: Callable[[], bytes]
    """The PNG that --plot writes."""
    render: Callable[[Console], None]


def emit(views: Views, out: Outputs, inputs: Iterable[Path] = ()) -> None:
    """Write every output; ``inputs`` are the files the audit read, none of which may be overwritten."""
    from ..render.github import append_step_summary
    from ..render.json_report import dumps

    out.refuse_overlap(inputs)
    if out.json_out is not None:
        write_output(out.json_out, dumps(views.document).encode())
    if out.markdown is not None:
        write_output(out.markdown, views.markdown().encode())
    if out.plot is not None:
        write_output(out.plot, views.plot())
    if out.fmt is Format.GITHUB:
        write_stdout("".join(line + "\n" for line in views.annotations()).encode())
        append_step_summary(views.markdown())
    if not out.quiet and not out.stdout_taken:
        views.render(make_console(out.no_color or out.fmt is Format.GITHUB))


class progress:
    """A rich progress bar on a terminal; a no-op elsewhere."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __enter__(self) -> Callable[..., None] | None:
        if not self.enabled:
            return None
        from rich.progress import Progress

        self.bar = Progress(transient=True)
        self.task = self.bar.add_task("auditing", total=None)
        self.bar.start()

        def update(done: int, total: int, what: str = "auditing") -> None:
            self.bar.update(self.task, completed=done, total=total, description=what)

        return update

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.bar.stop()
