"""``--plot OUT.png`` (optional extra ``plot``): the per-layer profile of one or more
audits, or the same quantities over a trajectory's checkpoints. 1200 x 800 pixels."""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InputError
from ..escape import printable
from ..report.trajectories import Trajectory
from .findings import is_degenerate
from .formatting import verdict_text

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

SIZE_INCHES, DPI = (12.0, 8.0), 100
QUANTITIES = (
    ("cos", "cos Γ (per-sample mean ± se)", False),
    ("growth", "growth ‖h(l+1)‖ / ‖h(l)‖ (median, 95 % interval)", True),
    ("g_norm", "‖g‖ BP (median, 95 % interval)", True),
    ("h_norm", "‖h‖ (median, 95 % interval)", True),
)


def _figure() -> tuple[Figure, list[Axes]]:
    logging.getLogger("matplotlib").setLevel(logging.ERROR)  # e.g. "created a temporary cache directory"
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt
    except ImportError:
        raise InputError("--plot needs matplotlib, which is not installed: pip install 'fa-audit[plot]'") from None
    fig, axes = plt.subplots(2, 2, figsize=SIZE_INCHES, dpi=DPI)
    return fig, list(axes.flat)


THRESHOLD_LINES = {
    "growth": ("scale_stability", "max_block_growth", "max growth"),
    "g_norm": ("reference_validity", "min_grad_norm", "min ‖g‖"),
}


def _thresholds(ax: Axes, quantity: str, config: dict[str, Any]) -> None:
    if quantity not in THRESHOLD_LINES:
        return
    section, key, label = THRESHOLD_LINES[quantity]
    value = config.get(section, {}).get(key)
    if isinstance(value, int | float):
        ax.axhline(value, color="red", ls="--", lw=1, label=label)


IMAGE_FORMATS = ("png", "pdf", "svg")
"""What --plot writes, by the file's extension (matplotlib's own backends)."""


def _image(fig: Figure, kind: str) -> bytes:
    """The figure as PNG, PDF or SVG bytes. matplotlib warns about missing glyphs, layouts and its
    cache folder on stderr; a plot is an output like any other and says nothing under --quiet."""
    from matplotlib import pyplot as plt

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format=kind, dpi=DPI)
    plt.close(fig)
    return buffer.getvalue()


def verdict_line(report: dict[str, Any]) -> str:
    """'dfa.pt: WALK BACK (scale FAIL, reference FAIL, depth FAIL)': what the figure's title carries."""
    checks = ", ".join(
        f"{c['name'].split('_')[0]} {c['status'].replace('_', ' ').upper()}" for c in report.get("checks", [])
    )
    return f"{printable(Path(report['checkpoint']).name)}: {verdict_text(report['verdict'])} ({checks})"


def _cos_markers(report: dict[str, Any]) -> dict[str, Any]:
    """Hollow markers for a degenerate report's cosines (its reference failed: no useful credit)."""
    return {"markerfacecolor": "none"} if is_degenerate(report) else {}


def plot_profiles(reports: list[dict[str, Any]], kind: str = "png") -> bytes:
    """Per-layer profile; several reports (compare) are overlaid. The title carries each
    report's verdict and checks; a degenerate report's cosines are hollow, its label says so."""
    fig, axes = _figure()
    fig.suptitle("\n".join(verdict_line(r) for r in reports), fontsize=10)
    z = reports[0]["config"].get("depth_utility", {}).get("null_z", 3.0)
    for index, report in enumerate(reports):
        name = Path(report["checkpoint"]).name
        layers = report["layers"]
        xs = list(range(len(layers)))
        hollow = _cos_markers(report)
        for ax, (key, title, log) in zip(axes, QUANTITIES, strict=True):
            points = [(x, la[key]) for x, la in zip(xs, layers, strict=True) if la.get(key) is not None]
            style = hollow if key == "cos" else {}
            label = f"{name} (degenerate: hollow)" if style else name
            (line,) = ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label, **style)
            if key != "cos":
                _interval_bars(
                    ax, [(x, la[key], la.get(f"{key}_interval")) for x, la in zip(xs, layers, strict=True)], line
                )
            else:
                _error_bars(ax, [(x, la["cos"], la.get("cos_se")) for x, la in zip(xs, layers, strict=True)], line)
                band = [
                    (x, la["null_mean"], la["null_std"])
                    for x, la in zip(xs, layers, strict=True)
                    if la.get("null_mean") is not None and la.get("null_std") is not None
                ]
                if band:
                    _null_band(ax, band, z, line.get_color(), f"{name}: null band ±{z:g}σ", hatched=index > 0)
            ax.set_xticks(xs, [la["name"] for la in layers])
            ax.set_title(title)
            if log:
                ax.set_yscale("log")
    for ax, (key, _, _) in zip(axes, QUANTITIES, strict=True):
        _thresholds(ax, key, reports[0]["config"])
        ax.legend(fontsize=7)
    return _image(fig, kind)


def _error_bars(ax: Axes, points: Sequence[tuple[float, float | None, float | None]], line: Any) -> None:
    """Γ ± its standard error over the eval samples, in the line's colour, where the report has it."""
    spans = [(x, y, None if y is None or se is None else (y - se, y + se)) for x, y, se in points]
    _interval_bars(ax, spans, line)


def _interval_bars(ax: Axes, points: Sequence[tuple[float, float | None, Sequence[float] | None]], line: Any) -> None:
    """A number and its interval (a median's 95 % over the eval samples), in the line's colour, where the
    report has it."""
    known = [(x, y, span) for x, y, span in points if y is not None and span is not None]
    if known:
        xs, ys, spans = zip(*known, strict=True)
        below, above = (
            [y - s[0] for y, s in zip(ys, spans, strict=True)],
            [s[1] - y for y, s in zip(ys, spans, strict=True)],
        )
        ax.errorbar(xs, ys, yerr=[below, above], fmt="none", ecolor=line.get_color(), capsize=3)


def _null_band(
    ax: Axes, band: Sequence[tuple[float, float, float]], z: float, color: Any, label: str, hatched: bool = False
) -> None:
    """μ ± zσ of the null at each point, in its line's colour: filled, or (a second report
    overlaid, compare) hatched and outlined, so that two bands stay apart where they overlap."""
    xs, low, high = [b[0] for b in band], [b[1] - z * b[2] for b in band], [b[1] + z * b[2] for b in band]
    if hatched:
        ax.fill_between(xs, low, high, facecolor="none", edgecolor=color, hatch="//", linewidth=0.8, label=label)
    else:
        ax.fill_between(xs, low, high, color=color, alpha=0.15, label=label)


def _degenerate_points(xs: list[float], ordered: list[dict[str, Any]], layer: int) -> list[tuple[float, float]]:
    """Layer ``layer``'s cosine at each checkpoint whose report is degenerate."""
    return [
        (x, r["layers"][layer]["cos"])
        for x, r in zip(xs, ordered, strict=True)
        if layer < len(r["layers"]) and r["layers"][layer].get("cos") is not None and is_degenerate(r)
    ]


def plot_trajectory(traj: Trajectory, reports: list[dict[str, Any]], kind: str = "png") -> bytes:
    """Each layer's quantities over the trajectory's checkpoints: against epoch when every
    checkpoint has a distinct one (a training run), else one point per checkpoint (a sweep). The
    title carries the last checkpoint's verdict and the trajectory's exit code; the cosines of
    degenerate checkpoints are hollow."""
    fig, axes = _figure()
    ordered = [reports[row.index] for row in traj.rows]
    fig.suptitle(
        f"trajectory of {len(ordered)} checkpoints, exit code {int(traj.exit_code)}; last: {verdict_line(ordered[-1])}",
        fontsize=10,
    )
    epochs = [row.epoch for row in traj.rows]
    with_epochs = None not in epochs and len(set(epochs)) == len(epochs)
    xs = [row.epoch if with_epochs and row.epoch is not None else float(i) for i, row in enumerate(traj.rows)]
    names = [la["name"] for la in ordered[0]["layers"]]
    for ax, (key, title, log) in zip(axes, QUANTITIES, strict=True):
        for i, layer in enumerate(names):
            points = [(x, r["layers"][i].get(key)) for x, r in zip(xs, ordered, strict=True) if i < len(r["layers"])]
            kept = [(x, v) for x, v in points if v is not None]
            if kept:
                (line,) = ax.plot([p[0] for p in kept], [p[1] for p in kept], marker="o", label=layer)
                if key == "cos":
                    at = [(x, r["layers"][i]) for x, r in zip(xs, ordered, strict=True) if i < len(r["layers"])]
                    _error_bars(ax, [(x, la.get("cos"), la.get("cos_se")) for x, la in at], line)
                    band = [
                        (x, r["layers"][i]["null_mean"], r["layers"][i]["null_std"])
                        for x, r in zip(xs, ordered, strict=True)
                        if i < len(r["layers"]) and r["layers"][i].get("null_mean") is not None
                        and r["layers"][i].get("null_std") is not None
                    ]  # fmt: skip
                    if band:
                        z = ordered[0]["config"].get("depth_utility", {}).get("null_z", 3.0)
                        _null_band(ax, band, z, line.get_color(), f"{layer}: null band ±{z:g}σ")
                hollow = _degenerate_points(xs, ordered, i) if key == "cos" else []
                if hollow:  # a degenerate checkpoint's point hollow, over the filled one
                    ax.plot([p[0] for p in hollow], [p[1] for p in hollow], "o", color=line.get_color(),
                                markerfacecolor="white")  # fmt: skip
        _thresholds(ax, key, ordered[0]["config"])
        ax.set_title(title)
        ax.set_xlabel("epoch" if with_epochs else "checkpoint")
        if not with_epochs:
            ax.set_xticks(xs, [Path(row.checkpoint).stem for row in traj.rows], rotation=30, fontsize=7)
        if log:
            ax.set_yscale("log")
        ax.legend(fontsize=7)
    return _image(fig, kind)
