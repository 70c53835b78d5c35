"""Where results go: the files of the output formats (:mod:`fa_audit.formats`), the
terminal, and --format github. Every command hands over one :class:`Result`."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError
from ..output_file import STDOUT, check_writable, same_file, write_output, write_stdout
from .runtime import is_lead_rank, make_console

if TYPE_CHECKING:
    from ..formats import FileFormat, Result


def _formats() -> dict[str, FileFormat]:
    """The registry, imported when a command runs (``fa-audit --help`` stays instant)."""
    from ..formats import FORMATS

    return FORMATS


class Format(StrEnum):
    TABLE = "table"
    GITHUB = "github"


@dataclass(frozen=True)
class Outputs:
    """Where a command's result goes: a file (or ``-``) per format of :data:`FORMATS` that
    was asked for, the terminal table or GitHub annotations, quiet or not."""

    targets: dict[str, str | None]
    """By format name (``json``, ``markdown``, ``plot``): the path its option gave."""
    fmt: Format = Format.TABLE
    quiet: bool = False
    no_color: bool = False
    lead: bool = True
    """This process writes and prints; under torchrun, rank 0 alone does."""

    @classmethod
    def of(cls, fmt: Format, quiet: bool, no_color: bool, **targets: str | None) -> Outputs:
        unknown = set(targets) - set(_formats())
        assert not unknown, unknown  # a command passing an option no format registered
        chosen: dict[str, str | None] = {name: path for name, path in targets.items() if path is not None}
        return cls(chosen, fmt, quiet, no_color, is_lead_rank())

    def files(self) -> dict[str, str]:
        """Every output path by the option that names it (standard output left out)."""
        named = {_formats()[name].option: target for name, target in self.targets.items() if target is not None}
        if self.fmt is Format.GITHUB and os.environ.get("GITHUB_STEP_SUMMARY") is not None:
            named["GITHUB_STEP_SUMMARY"] = os.environ["GITHUB_STEP_SUMMARY"]
        return {option: target for option, target in named.items() if target != STDOUT}

    def check(self, inputs: Iterable[Path] = ()) -> None:
        """Refuse impossible outputs before any audit runs, and outputs that would
        overwrite an input (checked again against every file the audit read)."""
        formats = _formats()
        to_stdout = [formats[name] for name, target in self.targets.items() if target == STDOUT]
        for fmt in to_stdout:
            if not fmt.to_stdout:
                raise InputError(f"{fmt.option} writes {fmt.what}: give it a file, not '-'")
        if len(to_stdout) > 1:
            raise InputError(f"only one of {' and '.join(f.option for f in to_stdout)} can write to standard output")
        if self.fmt is Format.GITHUB and to_stdout:
            raise InputError(
                f"--format github writes annotations to stdout: give {to_stdout[0].option} a file, not '-'"
            )
        for name in self.targets:
            needs = formats[name].needs
            if needs is not None:
                from importlib.util import find_spec

                if find_spec(needs) is None:
                    raise InputError(
                        f"{formats[name].option} needs {needs}, which is not installed: pip install 'fa-audit[{name}]'"
                    )
        for option, target in self.files().items():
            check_writable(target, option)
        self.refuse_overlap(inputs)
        for name, path in self.targets.items():
            if path is not None and formats[name].kinds and formats[name].kind_of(path) is None:
                kinds = ", ".join(f".{k}" for k in formats[name].kinds)
                raise InputError(f"{formats[name].option} writes {kinds} files, by the extension: name one of them")

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
        return STDOUT in self.targets.values()

    @property
    def progress(self) -> str | None:
        """``bar`` on a terminal, ``lines`` on stderr in a pipe or a CI log (a long audit there is
        not silent), None with --quiet or on a rank other than the first."""
        if not self.lead or self.quiet:
            return None
        return "bar" if sys.stdout.isatty() and not self.stdout_taken else "lines"


def emit(result: Result, out: Outputs, inputs: Iterable[Path] = ()) -> None:
    """Write every output; ``inputs`` are the files the audit read, none of which may be overwritten."""
    out.refuse_overlap(inputs)
    if not out.lead:
        return
    for name, target in out.targets.items():
        if target is not None:
            write_output(target, _formats()[name].output(result, target))
    if out.fmt is Format.GITHUB:
        from ..formats.github import workflow_commands
        from ..formats.markdown_format import markdown
        from ..render.github import append_step_summary

        write_stdout("".join(line + "\n" for line in workflow_commands(result)).encode())
        append_step_summary(markdown(result))
    if not out.quiet and not out.stdout_taken:
        result.render(make_console(out.no_color or out.fmt is Format.GITHUB))


PROGRESS_SECONDS = 15.0
"""Off a terminal, a progress line at most this often, the first after this long (a short
audit prints none)."""


class progress:
    """A rich progress bar on a terminal (``bar``), a line on stderr every PROGRESS_SECONDS
    elsewhere (``lines``: done/total and the rate), nothing for None."""

    def __init__(self, mode: str | None) -> None:
        self.mode = mode
        self.enabled = mode == "bar"

    def __enter__(self) -> Callable[..., None] | None:
        if self.mode == "lines":
            return _progress_lines()
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


def _progress_lines() -> Callable[..., None]:
    start = last = time.monotonic()

    def update(done: int, total: int, what: str = "auditing") -> None:
        nonlocal last
        now = time.monotonic()
        if now - last < PROGRESS_SECONDS:
            return
        last = now
        rate = done / max(now - start, 1e-9)
        sys.stderr.write(f"fa-audit: {what}: {done}/{total} ({rate:.0f}/s)\n")
        sys.stderr.flush()

    return update
