"""A stop that a signal asked for, remembered as well as raised.

A signal handler raises where the interpreter happens to be, and that may be inside
torch's C++ code, which can catch what was raised and raise its own error in its place
(slicing a tensor gave ``ValueError: could not determine the shape of object type
'torch.storage.UntypedStorage'``) or swallow it. So the stop is recorded before it is
raised: whatever error then reaches the top is the stop, and nothing is written after it.
"""

from __future__ import annotations

from typing import NoReturn

from .exit_codes import ExitCode


class Stopped(BaseException):
    """A signal asked fa-audit to stop; not an Exception, so no handler mistakes it for a finding."""

    def __init__(self, code: ExitCode) -> None:
        super().__init__(code)
        self.code = code


_requested: list[ExitCode] = []


def stop(code: ExitCode) -> NoReturn:
    _requested.append(code)
    raise Stopped(code)


def check() -> None:
    """Raise the stop a signal asked for, if one did (its first, should several arrive)."""
    if _requested:
        raise Stopped(_requested[0])
