"""``--latex``: booktabs tables of an audit for a paper's appendix, each with a caption that
states the verdict, every check's status and the thresholds it was judged by (the protocol
paper reports its audits as such tables). Text from a file (module and checkpoint names) is
escaped; numbers are the report's, as the Markdown report prints them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..report.trajectories import Trajectory
from .findings import is_degenerate
from .formatting import check_thresholds, metric_text, num, verdict_text, with_error
from .rows import TRAJECTORY_COLUMNS, trajectory_rows

_SPECIAL = {
    "\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&", "#": r"\#", "_": r"\_",
    "%": r"\%", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}  # fmt: skip
_SYMBOLS = {"Γ": r"$\Gamma$", "‖": r"$\|$", "μ": r"$\mu$", "σ": r"$\sigma$", "±": r"$\pm$", "≤": r"$\le$",
            "≥": r"$\ge$", "×": r"$\times$", "—": "---", "…": r"\ldots{}", "·": r"$\cdot$", "−": "$-$"}  # fmt: skip


def escape(text: str) -> str:
    """``text`` safe in LaTeX's text mode: its special characters escaped, the symbols the report
    uses as math, any other non-ASCII character dropped to '?' (pdfLaTeX would stop on it)."""
    out = []
    for ch in text:
        if ch in _SPECIAL:
            out.append(_SPECIAL[ch])
        elif ch in _SYMBOLS:
            out.append(_SYMBOLS[ch])
        elif ch.isascii() and (ch.isprintable() or ch == " "):
            out.append(ch)
        else:
            out.append("?")
    return "".join(out)


LAYER_COLUMNS = ("layer", "module", "‖h‖", "growth", "‖g‖ (BP)", "cos Γ ± se", "null μ ± σ", "z")


def report_latex(report: dict[str, Any]) -> str:
    """One audit: its per-layer table, captioned with the verdict and the checks."""
    degenerate = is_degenerate(report)
    rows = []
    for layer in report["layers"]:
        band = "—" if layer["null_mean"] is None else f"{layer['null_mean']:+.3f} ± {layer['null_std']:.3f}"
        mark = r"$^{*}$" if degenerate and not layer.get("refused") else ""
        cos = "refused" if layer.get("refused") else with_error(layer["cos"], layer.get("cos_se"), spaced=True)
        cells = [layer["name"], layer["module"], num(layer["h_norm"]), num(layer["growth"]), num(layer["g_norm"])]
        rows.append([*(escape(c) for c in cells), escape(cos) + mark, escape(band), escape(num(layer["z"], 3))])
    metric = report.get("metric") or {"name": "accuracy", "value": report["accuracy"]}
    checks = "; ".join(
        f"{c['name'].replace('_', ' ')} {c['status'].replace('_', ' ').upper()} "
        f"({check_thresholds(c['name'], c.get('thresholds', {}), c.get('values'))})"
        for c in report["checks"]
    )
    said = metric_text(
        metric["name"], report.get("loss_head", ""), metric["value"], metric.get("perplexity"), metric.get("se")
    )
    caption = (
        f"fa-audit of {Path(report['checkpoint']).name} ({report['arch']}, method {report['method']}, "
        f"{report['samples']} eval samples, {said}): "
        f"verdict {verdict_text(report['verdict'])} (exit code {report['exit_code']}). Checks: {checks}. "
        "cos Γ is the mean over samples of the cosine between the method's credit and the BP gradient at each "
        "hidden state, ± its standard error over the samples; null μ ± σ the same for fresh random feedback; "
        "z = (Γ − μ)/σ."
    )
    if degenerate:
        caption += (
            " Cosines marked with an asterisk are degenerate: reference validity failed, so they do not measure "
            "useful credit."
        )
    return _table("ll" + "r" * (len(LAYER_COLUMNS) - 2), LAYER_COLUMNS, rows, caption)


def trajectory_latex(traj: Trajectory, reports: list[dict[str, Any]]) -> str:
    rows = [[escape(cell) for cell in row] for row in trajectory_rows(traj)]
    caption = f"fa-audit trajectory over {len(rows)} checkpoints: exit code {int(traj.exit_code)}, the worst over them."
    columns = "l" + "r" * (len(TRAJECTORY_COLUMNS) - 1)
    return "\n".join([_table(columns, TRAJECTORY_COLUMNS, rows, caption), *(report_latex(r) for r in reports)])


def comparison_latex(comparison: dict[str, Any]) -> str:
    return "\n".join(report_latex(comparison[side]) for side in ("a", "b"))


def _table(columns: str, header: tuple[str, ...], rows: list[list[str]], caption: str) -> str:
    """A booktabs table (``\\usepackage{booktabs}``)."""
    lines = [
        r"\begin{table}[ht]", r"\centering", r"\small", rf"\begin{{tabular}}{{{columns}}}", r"\toprule",
        " & ".join(escape(h) for h in header) + r" \\", r"\midrule",
        *(" & ".join(row) + r" \\" for row in rows),
        r"\bottomrule", r"\end{tabular}", rf"\caption{{{escape(caption)}}}",
        r"\end{table}", "",
    ]  # fmt: skip
    return "\n".join(lines)
