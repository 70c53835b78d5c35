"""What every command shares: exceptions mapped to exit codes, the torch version gate,
threads, the console and --arch-config parsing."""

from __future__ import annotations

import os
import shutil
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer

from ..errors import InputError
from ..escape import printable, short
from ..exit_codes import ExitCode

if TYPE_CHECKING:
    from rich.console import Console

MIN_TORCH = (2, 10)
MAX_THREADS = 1024
MIN_WIDTH = 80  # columns the tables are laid out for, however narrow the terminal


def _fail(code: ExitCode, message: str) -> NoReturn:
    sys.stderr.write(f"fa-audit: {printable(message)}\n")  # file names and keys arrive escaped
    raise typer.Exit(int(code))


def guarded(body: Callable[[], ExitCode], debug: bool) -> NoReturn:
    """Run a command body; every exception becomes an exit code, never a traceback
    (unless --debug) and never exit 1, which means "a check failed"."""
    try:
        code = body()
    except typer.Exit:
        raise
    except InputError as exc:
        if debug:
            traceback.print_exc()
        _fail(ExitCode.INPUT_ERROR, f"error: {exc}")
    except KeyboardInterrupt:
        _fail(ExitCode.INTERRUPTED, "interrupted")
    except Exception as exc:
        if debug:
            traceback.print_exc()
        _fail(
            ExitCode.INTERNAL_ERROR,
            f"internal error ({exc.__class__.__name__}: {str(exc)[:200]}). This is a bug in fa-audit: please "
            "report it with the command you ran; --debug shows the traceback",
        )
    raise typer.Exit(int(code))


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


def parse_arch_config(value: str | None) -> dict[str, Any] | None:
    """Inline JSON, or a YAML/JSON file."""
    if value is None:
        return None
    from ..text_input import CONFIG_BYTES, parse_json, parse_yaml, read_text

    if value.lstrip().startswith("{"):
        parsed = parse_json(value[: CONFIG_BYTES + 1], None)
    else:
        path = Path(value)
        parsed = parse_yaml(read_text(path, "an --arch-config file", CONFIG_BYTES), path)
    if not isinstance(parsed, dict) or not all(isinstance(k, str) for k in parsed):
        raise InputError("--arch-config must be a mapping with text keys")
    return parsed


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
