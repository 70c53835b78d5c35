"""The process an audit runs in: the torch version it needs, its thread count, and the
console it prints to."""

from __future__ import annotations

import os
import shutil
import sys
from typing import TYPE_CHECKING

from ..errors import InputError
from ..escape import short

if TYPE_CHECKING:
    from rich.console import Console

MIN_TORCH = (2, 10)
MAX_THREADS = 1024
MIN_WIDTH = 80  # columns the tables are laid out for, however narrow the terminal


def require_safe_torch() -> None:
    import torch

    version = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2] if p.isdigit())
    if version < MIN_TORCH:
        raise InputError(
            f"torch {torch.__version__} is too old: releases before 2.10 have known escapes from the "
            "safe (weights_only) checkpoint loader; upgrade torch to 2.10 or newer"
        )


def set_threads(threads: int | None) -> None:
    if threads is None:
        return
    if not 1 <= threads <= MAX_THREADS:
        raise InputError(f"--threads must be from 1 to {MAX_THREADS}, not {short(threads)}")
    import torch

    torch.set_num_threads(threads)


def make_console(no_color: bool) -> Console:
    from rich.console import Console

    from ..output_file import silence_stdout

    class _Console(Console):
        def on_broken_pipe(self) -> None:  # rich's own exits with 1, which means "a check failed"
            silence_stdout()

    # Off a terminal (CI logs, files) rich would assume 80 columns and cut the table. On a
    # terminal narrower than 80, rich shrinks ten columns to nothing and prints blank cells:
    # lay out for 80 (cells ellipsised) and let the terminal wrap the lines.
    width = max(shutil.get_terminal_size().columns, MIN_WIDTH) if sys.stdout.isatty() else 120
    return _Console(no_color=no_color or "NO_COLOR" in os.environ, highlight=False, width=width)
