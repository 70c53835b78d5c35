"""``--latex``: booktabs tables for a paper, the verdict and every check with its thresholds in
the caption. No TeX engine is installed where the suite runs, so the document is checked for
balanced environments and braces, and for every special character of a hostile name escaped;
where pdflatex is found, the tables are compiled."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from fa_audit.render.latex import escape, report_latex
from fa_audit.report import AuditReport

from ..cli_runner import run
from ..conftest import SAMPLES


def _balanced(tex: str) -> None:
    body = re.sub(r"\\[{}$%&#_]", "", tex)  # escaped characters are text
    assert body.count("{") == body.count("}"), "unbalanced braces"
    for env in ("table", "tabular"):
        assert tex.count(rf"\begin{{{env}}}") == tex.count(rf"\end{{{env}}}") > 0, env
    assert body.count("$") % 2 == 0, "an odd number of math shifts"


def test_a_report_is_a_captioned_booktabs_table(audited: Callable[..., AuditReport]) -> None:
    report = audited("dfa", baseline=True)
    tex = report_latex(report.to_dict())
    _balanced(tex)
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    caption = tex[tex.index(r"\caption{") :]
    assert (
        "verdict WALK BACK (exit code 1)" in caption and "scale stability FAIL (growth $\\le$ 50.0$\\times$)" in caption
    )
    for layer in report.measurements.layers:
        assert layer.cos is not None and layer.cos_se is not None
        cos = f"{layer.cos:+.3f} $\\pm$ {layer.cos_se:.3f}$^{{*}}$"  # with its standard error; degenerate marked
        assert f"{layer.name} & {layer.module} & " in tex and cos in tex


def test_hostile_names_are_escaped() -> None:
    text = r"blocks.0_{evil}\input{/etc/passwd}$x$ & 100% #1 ~^" + "\x1b[31m"
    escaped = escape(text)
    assert r"\input" not in escaped.replace(r"\textbackslash{}input", "") and "\x1b" not in escaped
    _balanced(r"\begin{table}\begin{tabular}{l}" + escaped + r"\end{tabular}\end{table}")


def test_the_cli_writes_it_for_a_trajectory_and_a_comparison(tmp_path: Path) -> None:
    code, _, err = run("run", SAMPLES / "dfa_ep1.pt", SAMPLES / "dfa_ep2.pt", "--max-samples", "256",
                       "--latex", tmp_path / "traj.tex", "--quiet")  # fmt: skip
    assert code == 1, err
    traj = (tmp_path / "traj.tex").read_text()
    _balanced(traj)
    assert "trajectory over 2 checkpoints" in traj and traj.count(r"\begin{table}") == 3
    code, out, _ = run(
        "compare", SAMPLES / "dfa_penalty.pt", SAMPLES / "dfa.pt", "--max-samples", "256", "--latex", "-"
    )
    assert code == 1 and out.count(r"\begin{table}") == 2
    _balanced(out)


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="no TeX engine here")
def test_it_compiles(tmp_path: Path, audited: Callable[..., AuditReport]) -> None:
    body = report_latex(audited("dfa").to_dict())
    (tmp_path / "t.tex").write_text(
        "\\documentclass{article}\\usepackage{booktabs}\\begin{document}" + body + "\\end{document}\n"
    )
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "t.tex"], cwd=tmp_path, capture_output=True)
    assert done.returncode == 0, done.stdout[-2000:]
