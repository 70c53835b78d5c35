"""Every exception of a command mapped to its exit code: one line on stderr, never a
traceback (unless --debug)."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from typing import NoReturn

import typer

from ..errors import InputError
from ..escape import printable
from ..exit_codes import ExitCode
from ..stopping import check as check_stopped
from .runtime import is_lead_rank, launched_rank

LOST_PEER = (
    "another rank of this torchrun run stopped while this one waited for it (its own output says why, "
    "a refusal on that rank alone, a signal or memory); no report was written"
)
_GLOO_LOST = ("Connection closed by peer", "Connection reset by peer", "Broken pipe")


def _lost_peer(exc: BaseException) -> bool:
    """gloo's error, under torchrun, when the process at the other end of a collective has gone."""
    try:
        several = launched_rank()[1] > 1
    except InputError:
        return False
    return several and isinstance(exc, RuntimeError) and any(cause in str(exc) for cause in _GLOO_LOST)


def _fail(code: ExitCode, message: str) -> NoReturn:
    check_stopped()  # torch may have put this error (an input error even) in place of a signal's stop
    if is_lead_rank():  # under torchrun every rank ends alike, and one says why
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
        if _lost_peer(exc):
            _fail(ExitCode.INPUT_ERROR, f"error: {LOST_PEER}")
        _fail(
            ExitCode.INTERNAL_ERROR,
            f"internal error ({exc.__class__.__name__}: {str(exc)[:200]}). This is a bug in fa-audit: please "
            "report it with the command you ran; --debug shows the traceback",
        )
    check_stopped()  # torch swallowed the signal's stop
    raise typer.Exit(int(code))
