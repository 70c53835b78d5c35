"""A long audit in a pipe or a CI log is not silent: off a terminal, a line on stderr every
PROGRESS_SECONDS (done/total and the rate); --quiet silences it; a short audit prints none."""

from __future__ import annotations

import pytest

from fa_audit.cli import outputs

from .cli_runner import run
from .conftest import SAMPLES


def test_a_pipe_gets_progress_lines_and_quiet_silences_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outputs, "PROGRESS_SECONDS", 0.0)
    code, out, err = run("run", SAMPLES / "dfa.pt", "--batch-size", "512", "--no-color", "--device", "cpu")
    lines = [line for line in err.splitlines() if line.startswith("fa-audit: auditing: ")]
    assert code == 1 and lines and lines[-1].startswith("fa-audit: auditing: 4096/4096 ("), err
    assert all(line.endswith("/s)") for line in lines) and "fa-audit: auditing" not in out
    code, _, err = run("run", SAMPLES / "dfa.pt", "--quiet", "--device", "cpu")
    assert code == 1 and err == ""


def test_a_short_audit_prints_no_progress_line() -> None:
    code, _, err = run("run", SAMPLES / "dfa.pt", "--max-samples", "256", "--no-color", "--device", "cpu")
    assert code == 1 and "fa-audit: auditing" not in err
