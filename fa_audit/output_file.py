"""Where an output goes, and how it is written without harming anything.

A regular file (or a new one) is replaced atomically: a temporary file in the same
folder, then a rename, so an interrupted run never leaves half a report; it gets the
mode any other tool's output would (the old file's, else 0666 less the umask). A
device, a FIFO or a ``/dev/stdout``-style link is written through, never replaced.
``-`` is standard output.
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from pathlib import Path

from .errors import InputError
from .stopping import check as check_stopped

STDOUT = "-"


def _existing_mode(path: Path) -> int | None:
    """The st_mode of what ``path`` names, following links; None when nothing is there."""
    try:
        return os.stat(path).st_mode
    except FileNotFoundError:
        return None


def _new_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def check_writable(target: str, option: str) -> None:
    """Refuse, before any work, an output that cannot be written; ``option`` (``--json``,
    ``GITHUB_STEP_SUMMARY``) is named, since an output path is often not typed by hand."""
    if target == "":
        raise InputError(f"{option} is an empty path; give it a file name")
    path = Path(target)
    mode = _existing_mode(path)
    if mode is not None and stat.S_ISDIR(mode):
        raise InputError(f"cannot be written as {option}: it is a directory", path)
    if mode is not None and not stat.S_ISREG(mode):
        if not os.access(path, os.W_OK):
            raise InputError(f"cannot be written as {option} (permission denied)", path)
        return
    folder = Path(os.path.realpath(path)).parent
    if not folder.is_dir():
        raise InputError(f"cannot be written as {option}: its folder does not exist", path)
    try:  # the only reliable test, for root and for pseudo file systems like /proc
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".fa-audit-probe.")
    except OSError as exc:
        refusal = f"cannot be written as {option}: its folder refuses new files ({exc.strerror})"
        raise InputError(refusal, path) from None
    os.close(fd)
    os.unlink(probe)


def write_output(target: str, data: bytes) -> None:
    check_stopped()  # a stopped run writes nothing, even where torch swallowed the stop
    if target == STDOUT:
        write_stdout(data)
        return
    path = Path(target)
    mode = _existing_mode(path)
    if mode is not None and not stat.S_ISREG(mode):
        with path.open("wb") as fh:  # a device or a FIFO: its reader gets the bytes
            fh.write(data)
        return
    real = Path(os.path.realpath(path))  # a link to a regular file: replace the file, keep the link
    _replace(real, data, stat.S_IMODE(mode) if mode is not None else _new_file_mode())


def write_stdout(data: bytes) -> None:
    """Bytes to standard output; a reader that went away (``| head``) is not an error."""
    try:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    except BrokenPipeError:
        silence_stdout()


def silence_stdout() -> None:
    """The reader of stdout went away (``| head``): drop the rest of the output, and let
    the command end with its own exit code rather than a broken-pipe error."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _replace(path: Path, data: bytes, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file (hard links, symlinks and ``..`` included)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)
