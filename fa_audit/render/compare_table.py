"""The terminal comparison: per layer, A, B and Δ of each compared quantity; per check,
A's and B's statuses; then the regressions."""

from __future__ import annotations

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from ..escape import printable
from ..report import LayerStats, Status
from ..report.comparison import COMPARED, WITH_ERROR, Comparison, LayerPair
from .formatting import OVERALL_COLUMNS, num, overall_cells, stability, with_error
from .table import STATUS_STYLE

LABELS = {
    "h_norm": "‖h‖",
    "growth": "growth",
    "g_norm": "‖g‖ BP",
    "cos": "cos Γ ± se",
    "z": "z",
    "dir_stab": "dir_stab±se",
}


def _value(layer: LayerStats | None, quantity: str) -> str:
    if layer is None:
        return "(absent)"
    if quantity == "cos":
        return "refused" if layer.refused is not None else with_error(layer.cos, layer.cos_se)
    if quantity == "dir_stab":
        return stability(layer.dir_stab, layer.dir_stab_se)
    return num(getattr(layer, quantity))


def _delta(pair: LayerPair, quantity: str) -> str:
    delta = pair.delta(quantity)
    if quantity in WITH_ERROR:
        return with_error(delta, pair.delta_se(quantity))
    return "—" if delta is None else ("+" if delta > 0 else "") + num(delta)


def overall_comparison(comparison: Comparison) -> Table:
    """The task metric, the aggregate Γ and deep Γ of A and B, each ± its standard error, and Δ."""
    table = Table(title="network: A, B and Δ = B − A", title_justify="left", header_style="bold")
    for column in OVERALL_COLUMNS:
        table.add_column(column, justify="left" if column == "quantity" else "right")
    for row in comparison.overall():
        table.add_row(*overall_cells(row))
    return table


def layer_comparison(comparison: Comparison) -> Table:
    table = Table(title="per-layer: A, B and Δ = B − A", title_justify="left", header_style="bold")
    for column in ("layer", "module", "quantity", "A", "B", "Δ"):
        table.add_column(column, justify="left" if column in {"layer", "module", "quantity"} else "right")
    for pair in comparison.layers:
        present = pair.a or pair.b
        module = present.module if present is not None else ""
        for i, quantity in enumerate(COMPARED):
            table.add_row(
                Text(printable(pair.name) if i == 0 else ""),
                Text(printable(module) if i == 0 else ""),
                LABELS[quantity],
                _value(pair.a, quantity),
                _value(pair.b, quantity),
                _delta(pair, quantity),
                end_section=i == len(COMPARED) - 1,
            )
    return table


def _status(status: Status | None) -> Text:
    if status is None:
        return Text("(absent)")
    return Text(status.value.upper().replace("_", " "), style=STATUS_STYLE[status])


def check_comparison(comparison: Comparison) -> Table:
    table = Table(title="checks", title_justify="left", header_style="bold")
    for column in ("check", "A", "B"):
        table.add_column(column)
    for name, a, b in comparison.check_pairs():
        table.add_row(name, _status(a), _status(b))
    return table


def render_comparison(comparison: Comparison, console: Console) -> None:
    header = Text(f"A = {printable(comparison.a.checkpoint)}\nB = {printable(comparison.b.checkpoint)}", style="bold")
    summary = Text()
    for regression in comparison.regressions:
        summary.append("  ✗ regression: ", style="bold red").append(printable(regression) + "\n")
    if not comparison.regressions:
        summary.append("  ✓ no regression: no check that passes for A fails for B\n", style="green")
    summary.append(f"exit code {int(comparison.exit_code)}", style="bold")
    tables = (overall_comparison(comparison), layer_comparison(comparison), check_comparison(comparison))
    console.print(Group(header, *tables, summary))
