"""The ``fa-audit`` program. Everything that can end it early is handled here, before
the command line (and typer) is even imported: Ctrl-C and SIGTERM end it with 130 and
143 and no traceback, a closed stdout is an input error, and a terminal that cannot
print Γ gets ASCII."""

from __future__ import annotations

import codecs
import os
import signal
import sys
from types import FrameType

from .exit_codes import ExitCode
from .stopping import Stopped, stop

# One character for one, so that rich's column widths still hold.
ASCII = {"Γ": "G", "‖": "|", "✗": "x", "✓": "v", "·": "-", "—": "-", "…": ".", "μ": "u", "σ": "s", "±": "~",
         "≥": ">", "≤": "<", "×": "x", "→": ">", "−": "-", "Δ": "d", "ᵀ": "T", "∠": "<", "°": "o"}  # fmt: skip


def _stop(signum: int, frame: FrameType | None) -> None:
    code = ExitCode.INTERRUPTED if signum == signal.SIGINT else ExitCode.TERMINATED
    if _importing(frame):  # torch's import catches what is raised inside it and goes on half-loaded
        sys.stderr.write("fa-audit: interrupted\n")
        sys.stderr.flush()
        os._exit(int(code))  # nothing is written while a module is being imported
    stop(code)


def _importing(frame: FrameType | None) -> bool:
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _ascii(error: UnicodeError) -> tuple[str, int]:
    assert isinstance(error, UnicodeEncodeError)
    bad = error.object[error.start : error.end]
    return "".join(ASCII.get(ch, "?") for ch in bad), error.end


def _prepare_streams() -> None:
    if sys.stdout is None:  # started with >&-
        if not {"-q", "--quiet", "--help", "--version"} & set(sys.argv[1:]):
            sys.stderr.write("fa-audit: error: standard output is closed; redirect it or pass --quiet\n")
            raise SystemExit(ExitCode.INPUT_ERROR)
        sys.stdout = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 (lives as long as the process)
    codecs.register_error("fa_audit_ascii", _ascii)
    for stream in (sys.stdout, sys.stderr):
        encoding = getattr(stream, "encoding", None) or "ascii"
        try:
            "Γ‖✗".encode(encoding)
        except (UnicodeEncodeError, LookupError):
            stream.reconfigure(errors="fa_audit_ascii")  # type: ignore[union-attr]


def main() -> None:
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        _prepare_streams()
        from .cli import app

        app()
    except Stopped as stop:
        sys.stderr.write("fa-audit: interrupted\n")
        raise SystemExit(int(stop.code)) from None


if __name__ == "__main__":
    main()
