"""Markdown a paper or a CI summary can paste: the per-layer table, the checks with
values and thresholds, the verdict, and the settings that produced them. Built from
JSON-shaped reports, so merged reports render the same as fresh ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..report.comparison import overall
from ..report.trajectories import Trajectory
from .findings import (
    BORDERLINE,
    BORDERLINE_NOTE,
    DEGENERATE,
    DEGENERATE_NOTE,
    borderline_layers,
    findings,
    is_degenerate,
)
from .formatting import (
    OVERALL_COLUMNS,
    check_thresholds,
    check_value,
    metric_text,
    metric_value,
    num,
    overall_cells,
    stability,
    verdict_text,
    with_error,
)
from .rows import TRAJECTORY_COLUMNS, first_failure_lines, trajectory_rows

STATUSES = {"pass", "fail", "not_assessed"}
LAYER_COLUMNS = (
    "layer", "module", "‖h‖", "growth", "‖g‖ (BP)", "cos Γ ± se", "null μ ± σ", "z", "dir_stab ± se", "fp64",
)  # fmt: skip


def cell(text: object) -> str:
    """A table cell: pipes escaped, line breaks flattened."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def table(header: tuple[str, ...] | list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return lines


def _cos(layer: dict[str, Any], degenerate: bool) -> str:
    if layer.get("refused"):
        return "refused"
    mark = DEGENERATE if degenerate and layer["cos"] is not None else ""
    return with_error(layer["cos"], layer.get("cos_se"), spaced=True) + mark


def _band(layer: dict[str, Any]) -> str:
    if layer.get("null_mean") is None or layer.get("null_std") is None:
        return "—"
    return f"{layer['null_mean']:+.3f} ± {layer['null_std']:.3f}"


def layer_rows(report: dict[str, Any]) -> list[list[str]]:
    degenerate, borderline = is_degenerate(report), borderline_layers(report["checks"])
    return [
        [
            la["name"],
            la.get("module", ""),
            num(la.get("h_norm")),
            num(la["growth"]),
            num(la["g_norm"]),
            _cos(la, degenerate),
            _band(la),
            num(la.get("z")) + (BORDERLINE if la["name"] in borderline else ""),
            stability(la.get("dir_stab"), la.get("dir_stab_se"), spaced=True),
            num(la.get("fp64_agree"), 4),
        ]
        for la in report["layers"]
    ]


def check_rows(report: dict[str, Any]) -> list[list[str]]:
    return [
        [
            c["name"],
            c["status"].upper().replace("_", " "),
            check_value(c["name"], c.get("values", {})),
            check_thresholds(c["name"], c.get("thresholds", {}), c.get("values")) if c.get("thresholds") else "—",
        ]
        for c in report["checks"]
    ]


def _settings(report: dict[str, Any]) -> list[str]:
    settings = report.get("settings", {})
    inputs = report.get("inputs", [])
    config = report.get("config", {})
    lines = [
        f"- fa-audit {report.get('tool', {}).get('version', '?')}; arch `{report.get('arch')}`, "
        f"method `{report.get('method')}`; {report.get('samples')} eval samples"
    ]
    lines += [
        f"- `{Path(i['path']).name}`: SHA-256 `{i['sha256']}`"
        if i["sha256"]
        else f"- `{i['path']}`: eval batches from your code"
        for i in inputs
    ]
    lines.append(
        f"- {_null_kind(report, settings)}, seed {settings.get('seed')}, batch size "
        f"{settings.get('batch_size')}, device {settings.get('device')}"
    )
    lines += [
        f"- thresholds `{section}`: " + ", ".join(f"{k} = {v}" for k, v in values.items())
        for section, values in config.items()
        if isinstance(values, dict)
    ]
    return lines


def _null_kind(report: dict[str, Any], settings: dict[str, Any]) -> str:
    """How the null was measured: drawn on its samples, or in closed form over every eval sample
    (DFA, DRTP, bp), or some of each."""
    closed = [la["name"] for la in report.get("layers", []) if la.get("null_std_range")]
    drawn = [la["name"] for la in report.get("layers", []) if la.get("null_draws")]
    if closed and not drawn:
        return "null in closed form over every eval sample"
    said = f"null draws {settings.get('null_draws')}{_on_samples(settings)}"
    return f"{said} (closed form at {', '.join(closed)})" if closed else said


def _on_samples(settings: dict[str, Any]) -> str:
    """Reports written before the null was capped do not say on how many samples it ran."""
    return f" on {settings['null_samples']} samples" if "null_samples" in settings else ""


def report_markdown(report: dict[str, Any]) -> str:
    """One audit as a section: table, checks, verdict, findings, settings."""
    name = Path(report["checkpoint"]).name
    verdict = verdict_text(report["verdict"])
    lines = [f"### fa-audit: `{name}` — {verdict}", ""]
    metric = report.get("metric") or {"name": "accuracy", "value": report["accuracy"]}
    said = metric_text(
        metric["name"], report.get("loss_head", "cross_entropy"), metric["value"], metric.get("perplexity"),
        metric.get("se"),
    )  # fmt: skip
    accuracy = said.capitalize() if metric["name"] == "accuracy" else f"Eval {said}"
    if report.get("baseline_accuracy") is not None:
        accuracy += f" (frozen-blocks baseline {metric_value(metric['name'], report['baseline_accuracy'])})"
    headline = report["aggregate"]["headline"]
    if headline is not None:
        said = with_error(headline, report["aggregate"].get("headline_se"), spaced=True)
        accuracy += f"; aggregate Γ {said} (mean over layers: read the per-layer column)"
    deep = report["aggregate"].get("deep")
    if deep is not None:
        accuracy += f"; deep Γ {with_error(deep, report['aggregate'].get('deep_se'), spaced=True)} (h1..hL)"
    lines += [accuracy + ".", ""]
    lines += table(LAYER_COLUMNS, layer_rows(report))
    marks = [f"\\{DEGENERATE} {DEGENERATE_NOTE}"] if is_degenerate(report) else []  # '\\*': not a list item
    marks += [f"\\{BORDERLINE} {BORDERLINE_NOTE}"] if borderline_layers(report["checks"]) else []
    if marks:  # a line right under a table is read as one more row of it
        lines += ["", *marks]
    lines.append("")
    lines += [*table(("check", "status", "measured", "threshold"), check_rows(report)), ""]
    lines += [f"**Verdict: {verdict}** (exit code {report['exit_code']}).", ""]
    found = [f"- {f.mark} {f.label + ': ' if f.label else ''}{f.text}" for f in findings(report)]
    if found:
        lines += [*found, ""]
    lines += ["Settings:", "", *_settings(report), ""]
    return "\n".join(lines)


def trajectory_markdown(traj: Trajectory, reports: list[dict[str, Any]]) -> str:
    lines = ["## fa-audit trajectory", ""]
    rows = [[c.upper().replace("_", " ") if c in STATUSES else c for c in row] for row in trajectory_rows(traj)]
    lines += [*table(TRAJECTORY_COLUMNS, rows), ""]
    lines += [f"- {line}" for line in first_failure_lines(traj)] + [""]
    lines += [f"Exit code {int(traj.exit_code)} (the worst over the checkpoints).", ""]
    for row in traj.rows:
        lines.append(report_markdown(reports[row.index]))
    return "\n".join(lines)


def comparison_markdown(comparison: dict[str, Any]) -> str:
    a, b = comparison["a"], comparison["b"]
    lines = [f"## fa-audit compare: A = `{Path(a['checkpoint']).name}`, B = `{Path(b['checkpoint']).name}`", ""]
    regressions = comparison["regressions"]
    lines += [f"- regression: {r}" for r in regressions] or ["- no regression: no check that passes for A fails for B"]
    lines += ["", *table(OVERALL_COLUMNS, [overall_cells(row) for row in overall(a, b)])]
    lines += ["", f"Exit code {comparison['exit_code']}.", "", report_markdown(a), report_markdown(b)]
    return "\n".join(lines)
