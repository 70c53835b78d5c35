"""The terminal report: per-layer table, one row per check, the verdict.
Statuses are words, so the report reads the same without colour."""

from __future__ import annotations

from typing import Any

from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.table import Table
from rich.text import Text

from ..escape import printable, printable_doc
from ..report import AuditReport, LayerStats, Status, Verdict
from .findings import BORDERLINE, BORDERLINE_NOTE, DEGENERATE, DEGENERATE_NOTE, findings, is_degenerate
from .formatting import check_thresholds, check_value, metric_text, metric_value, num, signed, stability, with_error

STATUS_STYLE = {Status.PASS: "bold green", Status.FAIL: "bold red", Status.NOT_ASSESSED: "bold yellow"}
VERDICT_STYLE = {
    Verdict.TRUST: "bold white on green",
    Verdict.WALK_BACK: "bold white on red",
    Verdict.INCOMPLETE: "bold black on yellow",
}
VERDICT_TEXT = {Verdict.TRUST: "TRUST", Verdict.WALK_BACK: "WALK BACK", Verdict.INCOMPLETE: "INCOMPLETE"}


def _cos_cell(layer: LayerStats, degenerate: bool) -> Text:
    if layer.refused is not None:
        return Text("refused", style="bold magenta")
    text = Text(with_error(layer.cos, layer.cos_se))
    if degenerate and layer.cos is not None:
        text.append(DEGENERATE, style="bold red")
    return text


FULL_WIDTH = 118
"""The per-layer table's width with every column; narrower, it keeps what a verdict rests on."""
NARROW_LEFT_OUT = ("‖h‖", "null μ±σ", "dir_stab±se", "fp64")


class LayerTable:
    """The per-layer table, laid out for the width it is printed in: below FULL_WIDTH (an 80-column
    terminal or log) it leaves out NARROW_LEFT_OUT and says so, so that cos Γ and z print in full
    rather than ellipsised."""

    def __init__(self, report: AuditReport, degenerate: bool) -> None:
        self.report, self.degenerate = report, degenerate

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield layer_table(self.report, self.degenerate, narrow=options.max_width < FULL_WIDTH)


def layer_table(report: AuditReport, degenerate: bool, narrow: bool = False) -> Table:
    borderline = set(report.check("depth_utility").values.get("layers_borderline", []))
    captions = [f"{DEGENERATE} {DEGENERATE_NOTE}"] * degenerate + [f"{BORDERLINE} {BORDERLINE_NOTE}"] * bool(borderline)
    if narrow:
        captions.append(f"narrow: {', '.join(NARROW_LEFT_OUT)} left out (--json or a wider terminal has them)")
    table = Table(
        title="per-layer measurements",
        title_justify="left",
        header_style="bold",
        caption="\n".join(captions) or None,
        caption_justify="left",
    )
    columns = ("layer", "module", "‖h‖", "growth", "‖g‖ BP", "cos Γ ± se", "null μ±σ", "z", "dir_stab±se", "fp64")
    shown = [c for c in columns if not (narrow and c in NARROW_LEFT_OUT)]
    for column in shown:
        squeezable = column == "module"  # the one column that may be cut, never a number
        table.add_column(
            column, justify="left" if column in {"layer", "module"} else "right", no_wrap=True,
            overflow="ellipsis" if squeezable else "fold", min_width=None if squeezable else len(column),
        )  # fmt: skip
    for layer in report.measurements.layers:
        band = "—" if layer.null_mean is None else f"{layer.null_mean:+.3f}±{layer.null_std:.3f}"
        cells: dict[str, str | Text] = {
            "layer": layer.name,
            "module": Text(printable(layer.module)),  # Text, not markup: a module name is the file's text
            "‖h‖": num(layer.h_norm),
            "growth": num(layer.growth),
            "‖g‖ BP": num(layer.g_norm),
            "cos Γ ± se": _cos_cell(layer, degenerate),
            "null μ±σ": band,
            "z": num(layer.z, 3) + (BORDERLINE if layer.name in borderline else ""),
            "dir_stab±se": stability(layer.dir_stab, layer.dir_stab_se),
            "fp64": num(layer.fp64_agree, 4),
        }
        table.add_row(*(cells[c] for c in shown))
    return table


def diagnostics_table(report: AuditReport) -> Table:
    """``--wide``: what triangulates the cosine (first batch; see docs/measurements.md)."""
    table = Table(title="diagnostics (first batch)", title_justify="left", header_style="bold")
    columns = ("layer", "perturb. corr", "control +/−", "W∠B", "‖B‖/‖W‖")
    for column in columns:
        table.add_column(column, justify="left" if column == "layer" else "right", no_wrap=True)
    for layer in report.measurements.layers:
        table.add_row(
            layer.name,
            _rho_cell(layer),
            f"{signed(layer.perturbation_corr_pos)} / {signed(layer.perturbation_corr_neg)}"
            + ("" if layer.perturbation_corr_neg_se is None else f"±{layer.perturbation_corr_neg_se:.3f}"),
            _angle_cell(layer),
            num(layer.weight_ratio),
        )
    return table


def ranks_table(report: AuditReport) -> Table:
    """``--wide``: the effective ranks of the credit and of the BP gradient over the first batch's
    rows, each ± its jackknife standard error, and their ratio with the 95 % interval the
    rank-collapse note decides on."""
    table = Table(title="effective ranks (first batch)", title_justify="left", header_style="bold")
    for column in ("layer", "credit", "BP", "ratio", "ratio 95 %"):
        table.add_column(column, justify="left" if column == "layer" else "right", no_wrap=True)
    for layer in report.measurements.layers:
        table.add_row(
            layer.name,
            _rank_cell(layer.credit_rank, layer.credit_rank_se),
            _rank_cell(layer.bp_rank, layer.bp_rank_se),
            num(layer.rank_ratio),
            _span(layer.rank_ratio_interval),
        )
    return table


def _rank_cell(value: float | None, se: float | None) -> str:
    return num(value) if value is None or se is None else f"{num(value)}±{_short(se, 2)}"


def intervals_table(report: AuditReport) -> Table:
    """``--wide``: the intervals the checks decide on, per layer: the median growth's and ‖g‖/‖e‖'s and
    dir_stab's (95 % over the eval samples), z's (99.9 %, or the closed-form null's range); the JSON
    and the plot also have ‖h‖'s and ‖g‖'s (the rank ratio's is in :func:`ranks_table`)."""
    table = Table(title="intervals the checks decide on (95 %; z 99.9 %)", title_justify="left", header_style="bold")
    columns = ("layer", "growth", "‖g‖/‖e‖", "dir_stab", "z")
    for column in columns:
        table.add_column(column, justify="left" if column == "layer" else "right", no_wrap=True)
    for layer in report.measurements.layers:
        spans = (layer.growth_interval, layer.g_rel_interval, layer.dir_stab_interval, layer.z_interval)
        table.add_row(layer.name, *(_span(span) for span in spans))
    return table


def _span(interval: tuple[float, float] | None) -> str:
    """An interval in 80 columns' worth: each end to 3 significant digits, exponents without padding."""
    if interval is None:
        return "—"
    return "–".join(_short(end) for end in interval)


def _short(value: float, digits: int = 3) -> str:
    """``digits`` significant digits, trailing zeros kept (an interval of 1.00–1.00 is not one of 1–1)."""
    mantissa, _, exponent = f"{value:#.{digits}g}".partition("e")
    mantissa = mantissa.rstrip(".")
    return mantissa if not exponent else f"{mantissa}e{int(exponent)}"


def _rho_cell(layer: LayerStats) -> str:
    """ρ with its standard error; never ρ alone (it is not measured unless perturbation.nudges asks)."""
    if layer.perturbation_corr is not None and layer.perturbation_corr_se is not None:
        return f"{layer.perturbation_corr:+.3f}±{layer.perturbation_corr_se:.3f}"
    if layer.perturbation_corr_se is not None:
        return f"— (se {layer.perturbation_corr_se:.3f})"
    return "—"


def _angle_cell(layer: LayerStats) -> str:
    if layer.feedback_unused:
        return "B unused"  # its B only carries credit to the input (docs/measurements.md)
    return "—" if layer.weight_angle_deg is None else f"{layer.weight_angle_deg:.1f}°"


def checks_table(report: AuditReport) -> Table:
    table = Table(title="checks", title_justify="left", header_style="bold")
    for column in ("check", "status", "measured", "threshold"):
        table.add_column(column, no_wrap=column in {"check", "status"})
    for check in report.checks:
        table.add_row(
            check.name,
            Text(check.status.value.upper().replace("_", " "), style=STATUS_STYLE[check.status]),
            check_value(check.name, check.values),
            check_thresholds(check.name, check.thresholds, check.values),
        )
    return table


FINDING_STYLE = {"fail": "bold red", "not_assessed": "bold yellow", "note": "dim", "refused": "magenta"}


def findings_text(doc: dict[str, Any]) -> Text:
    text = Text()
    for found in findings(doc):
        label = f"{found.label}: " if found.label else ""
        text.append(f"  {found.mark} {label}", style=FINDING_STYLE[found.kind]).append(found.text + "\n")
    return text


def headline(report: AuditReport) -> Text:
    m = report.measurements
    world = report.settings.get("world_size", 1)
    ranks = f" on {world} ranks" if isinstance(world, int) and world > 1 else ""
    what = f"{report.checkpoint}  ({report.arch}, method {report.method}, {m.samples} samples{ranks})"
    text = Text(f"checkpoint {printable(what)}\n", style="bold")
    text.append(metric_text(m.metric, m.loss_head, m.accuracy, m.perplexity, m.metric_se))
    if report.baseline_accuracy is not None:
        text.append(f"   frozen-blocks baseline {metric_value(m.metric, report.baseline_accuracy)}")
    agg = m.aggregate
    if agg.headline is not None:
        values = [v for v in agg.strategies.values() if v is not None]
        said = with_error(agg.headline, agg.headline_se, spaced=True)
        text.append(
            f"\naggregate Γ {said} (mean over layers; other aggregations give "
            f"{min(values):+.3f} … {max(values):+.3f}: read the per-layer column, not this number)"
        )
    if agg.deep is not None:
        deep = with_error(agg.deep, agg.deep_se, spaced=True)
        text.append(f"\ndeep Γ {deep} (mean over h1..hL, where depth utility looks)")
    return text


def render(report: AuditReport, console: Console, wide: bool = False) -> None:
    verdict = Text(f" {VERDICT_TEXT[report.verdict]} ", style=VERDICT_STYLE[report.verdict])
    verdict.append(f"  exit code {int(report.exit_code)}")
    doc = printable_doc(report.to_dict())
    extra = (diagnostics_table(report), ranks_table(report), intervals_table(report)) if wide else ()
    tables = (LayerTable(report, is_degenerate(doc)), *extra, checks_table(report))
    console.print(Group(headline(report), *tables, findings_text(doc), verdict))
