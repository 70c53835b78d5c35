"""``--plot``: a PNG of the per-layer profiles, or of the trajectory (matplotlib, an extra)."""

from __future__ import annotations

from ..render.plot import plot_profiles, plot_trajectory
from .base import FileFormat, Result


def _write(result: Result) -> bytes:
    doc = result.document
    if result.kind == "report":
        return plot_profiles([doc])
    if result.kind == "trajectory":
        assert result.trajectory is not None
        return plot_trajectory(result.trajectory, doc)
    return plot_profiles([doc["a"], doc["b"]])


PLOT = FileFormat("plot", "a PNG image", to_stdout=False, write=_write, needs="matplotlib")
