"""The per-layer table at 80 columns (tmux, a CI log with COLUMNS=80): every layer's cos Γ and
z print in full, the columns left out are named, and a wide terminal still gets every column."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console

from fa_audit.render.table import NARROW_LEFT_OUT, render
from fa_audit.report import AuditReport

from ..cli_runner import run
from ..conftest import SAMPLES


def _printed(report: AuditReport, width: int) -> str:
    console = Console(width=width, record=True, no_color=True, file=open("/dev/null", "w"))  # noqa: SIM115
    render(report, console)
    return console.export_text()


def test_at_80_columns_every_cosine_and_z_is_whole(audited: Callable[..., AuditReport]) -> None:
    report = audited("dfa")
    narrow = _printed(report, 80)
    for layer in report.measurements.layers:
        row = next(line for line in narrow.splitlines() if line.startswith(f"│ {layer.name} "))
        assert f"{layer.cos:+.3f}" in row and f"{layer.z:.3g}" in row, row
    assert all(len(line) <= 80 for line in narrow.splitlines()), max(map(len, narrow.splitlines()))
    assert "narrow: " + ", ".join(NARROW_LEFT_OUT) + " left out" in narrow.replace("\n", " ").replace("  ", " ")
    wide = _printed(report, 160)
    assert all(column in wide for column in ("null μ±σ", "dir_stab", "fp64")) and "narrow:" not in wide


def test_columns_is_honoured_in_a_pipe() -> None:
    code, out, _ = run("run", SAMPLES / "dfa.pt", "--no-color", "--max-samples", "256", env={"COLUMNS": "80"})
    header = next(line for line in out.splitlines() if line.startswith("┃ layer"))
    assert code == 1 and "narrow: " in out and "dir_stab" not in header and "cos Γ" in header


def test_the_trajectory_table_at_80_columns_keeps_the_checks_and_verdicts() -> None:
    args = ("run", SAMPLES / "dfa_ep1.pt", SAMPLES / "dfa_ep2.pt", "--max-samples", "256", "--no-color")
    code, out, _ = run(*args, env={"COLUMNS": "80"})
    rows = [line for line in out.splitlines() if line.lstrip().startswith("dfa_ep")]
    assert code == 1 and len(rows) == 2 and all("FAIL" in r and "WALK BACK" in r and "…" not in r for r in rows), out
    assert "narrow: max growth, min ‖g‖, Γ, ± left out" in out
    assert all(len(line) <= 80 for line in out.splitlines())


@pytest.mark.parametrize(
    ("columns", "errors", "deep", "caption"),
    [
        (119, True, True, None),
        (118, True, False, "narrow: deep Γ's ± left out"),
        (110, False, False, "narrow: ± left out"),
    ],
)
def test_the_trajectory_gives_accuracy_and_gamma_with_their_errors_where_they_fit(
    columns: int, errors: bool, deep: bool, caption: str | None, tmp_path: Path
) -> None:
    """The widest layout that fits (these two rows: 119 columns with every ±, 113 without deep Γ's,
    102 without any): the accuracy and Γ ± their standard errors, the reports' own."""
    args = ("run", SAMPLES / "dfa_ep1.pt", SAMPLES / "dfa_ep2.pt", "--max-samples", "256", "--no-color")
    code, out, _ = run(*args, "--json", tmp_path / "r.json", env={"COLUMNS": str(columns)})
    rows = [line.split() for line in out.splitlines() if line.lstrip().startswith("dfa_ep")]
    assert code == 1 and len(rows) == 2 and all(len(line) <= columns for line in out.splitlines()), out
    accuracy, gamma, deep_gamma = rows[0][2], rows[0][5], rows[0][6]
    if errors:
        assert accuracy.startswith("0.") and "±" in accuracy and "±" in gamma
        value, se = (float(v) for v in accuracy.split("±"))
        assert se == pytest.approx(math.sqrt(value * (1 - value) / 255), abs=1e-4)  # binomial, over 256 samples
    else:
        assert "±" not in accuracy and "±" not in gamma and gamma.startswith(("+", "-"))
    if deep:
        deep_se = json.loads((tmp_path / "r.json").read_text())[0]["aggregate"]["deep_se"]
        assert deep_gamma.endswith(f"±{deep_se:.3f}") and 0 < deep_se < 0.01
    else:
        assert "±" not in deep_gamma
    assert (caption is None and "narrow" not in out) or (caption is not None and caption in out)
