"""``--plot``: the per-layer profiles, or the trajectory, as PNG, PDF or SVG by the file's
extension (matplotlib, an extra)."""

from __future__ import annotations

from ..render.plot import IMAGE_FORMATS, plot_profiles, plot_trajectory
from .base import FileFormat, Result


def _write(result: Result, kind: str = "png") -> bytes:
    doc = result.document
    if result.kind == "report":
        return plot_profiles([doc], kind)
    if result.kind == "trajectory":
        assert result.trajectory is not None
        return plot_trajectory(result.trajectory, doc, kind)
    return plot_profiles([doc["a"], doc["b"]], kind)


PLOT = FileFormat(
    "plot", "an image (PNG, PDF or SVG by the extension)", to_stdout=False, write=_write, needs="matplotlib",
    kinds=IMAGE_FORMATS,
)  # fmt: skip
