"""--plot: a valid PNG of the documented size; without matplotlib,
a clear exit 2."""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fa_audit import ExitCode, InputError
from fa_audit.render.plot import plot_profiles
from fa_audit.report import AuditReport

from ..cli_runner import run
from ..conftest import SAMPLES

Audited = Callable[..., AuditReport]


def png_size(path: Path) -> tuple[int, int]:
    raw = path.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n" and raw[12:16] == b"IHDR"
    width, height = struct.unpack(">II", raw[16:24])
    assert raw[-8:-4] == b"IEND"
    return width, height


def test_profile_plot_is_a_1200_by_800_png(tmp_path: Path) -> None:
    out = tmp_path / "profile.png"
    code, _, _ = run("run", SAMPLES / "dfa.pt", "--plot", out, "--quiet")
    assert code == ExitCode.WALK_BACK
    assert png_size(out) == (1200, 800)
    assert list(tmp_path.iterdir()) == [out]


def test_trajectory_and_compare_plots_render(tmp_path: Path) -> None:
    run("run", *(SAMPLES / f"dfa_ep{e}.pt" for e in (1, 2, 3)), "--plot", tmp_path / "t.png", "--quiet")
    run("compare", SAMPLES / "dfa.pt", SAMPLES / "dfa_penalty.pt", "--plot", tmp_path / "c.png", "--quiet")
    assert png_size(tmp_path / "t.png") == (1200, 800)
    assert png_size(tmp_path / "c.png") == (1200, 800)


def test_without_matplotlib_plot_is_an_input_error_saying_how_to_install(
    monkeypatch: pytest.MonkeyPatch, audited: Audited, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    with pytest.raises(InputError, match=r"pip install 'fa-audit\[plot\]'"):
        plot_profiles([audited("dfa").to_dict()])
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    code, out, err = run("run", SAMPLES / "dfa.pt", "--plot", tmp_path / "x.png")
    assert code == ExitCode.INPUT_ERROR and out == "" and "fa-audit[plot]" in err
    assert list(tmp_path.iterdir()) == []


def test_an_output_into_a_missing_folder_is_refused_before_auditing(tmp_path: Path) -> None:
    code, _, err = run("run", SAMPLES / "dfa.pt", "--markdown", tmp_path / "no" / "r.md")
    assert code == ExitCode.INPUT_ERROR and "its folder does not exist" in err


def test_the_extension_picks_the_image_format(tmp_path: Path) -> None:
    """x.pdf and x.svg held PNG bytes; now a PDF and an SVG, and an extension it cannot write is
    refused before the audit runs."""
    import xml.etree.ElementTree as ET

    pdf = run("run", SAMPLES / "dfa.pt", "--plot", tmp_path / "p.pdf", "--quiet")
    svg = run("run", SAMPLES / "dfa.pt", "--plot", tmp_path / "p.svg", "--quiet")
    assert pdf[0] == svg[0] == ExitCode.WALK_BACK
    assert (tmp_path / "p.pdf").read_bytes()[:5] == b"%PDF-"
    assert ET.parse(tmp_path / "p.svg").getroot().tag.endswith("svg")
    code, _, err = run("run", SAMPLES / "dfa.pt", "--plot", tmp_path / "p.jpg")
    assert code == ExitCode.INPUT_ERROR and "--plot writes .png, .pdf, .svg files" in err
    assert not (tmp_path / "p.jpg").exists()


def test_the_figure_carries_the_verdict_and_marks_degenerate_cosines(tmp_path: Path) -> None:
    """The SVG's text (matplotlib writes each string beside its glyph paths) holds the verdict and
    every check's status; a degenerate report's cosines are hollow (fill none) and its label says so."""
    code, _, _ = run("run", SAMPLES / "dfa.pt", "--max-samples", "256", "--plot", tmp_path / "p.svg", "--quiet")
    svg = (tmp_path / "p.svg").read_text()
    assert code == ExitCode.WALK_BACK
    assert "dfa.pt: WALK BACK (scale FAIL, reference FAIL, depth FAIL)" in svg
    assert "dfa.pt (degenerate: hollow)" in svg and "fill: none" in svg
    code, _, _ = run("run", SAMPLES / "dfa_ep1.pt", SAMPLES / "dfa_ep8.pt", "--max-samples", "256",
                     "--plot", tmp_path / "t.svg", "--quiet")  # fmt: skip
    trajectory = (tmp_path / "t.svg").read_text()
    assert "trajectory of 2 checkpoints, exit code 1; last: dfa_ep8.pt: WALK BACK" in trajectory


def test_each_null_band_is_drawn_and_named(tmp_path: Path) -> None:
    """Compare: each report's band under its own name, the second hatched so that the two stay
    apart where they overlap; a trajectory: each layer's band over the checkpoints."""
    run("compare", SAMPLES / "dfa.pt", SAMPLES / "dfa_penalty.pt", "--max-samples", "256", "--plot",
        tmp_path / "c.svg", "--quiet")  # fmt: skip
    compared = (tmp_path / "c.svg").read_text()
    assert "dfa.pt: null band ±3σ" in compared and "dfa_penalty.pt: null band ±3σ" in compared
    assert 'id="h' in compared or "<pattern" in compared  # matplotlib writes a hatch as an SVG pattern
    run("run", SAMPLES / "dfa_ep1.pt", SAMPLES / "dfa_ep8.pt", "--max-samples", "256", "--plot",
        tmp_path / "t.svg", "--quiet")  # fmt: skip
    trajectory = (tmp_path / "t.svg").read_text()
    assert "h0: null band ±3σ" in trajectory and "h1: null band ±3σ" in trajectory


def test_each_median_is_drawn_with_its_95_percent_interval(monkeypatch: pytest.MonkeyPatch, audited: Audited) -> None:
    """‖h‖, growth and ‖g‖ are medians over the eval samples: each point gets its interval's bars
    (the report's ``*_interval``), as Γ gets its standard error's."""
    from matplotlib.axes import Axes

    drawn: list[tuple[list[float], list[float], Any]] = []
    real = Axes.errorbar

    def record(self: Axes, x: Any, y: Any, yerr: Any = None, **kwargs: Any) -> Any:
        drawn.append((list(x), list(y), yerr))
        return real(self, x, y, yerr=yerr, **kwargs)

    monkeypatch.setattr(Axes, "errorbar", record)
    report = audited("bp").to_dict()
    plot_profiles([report])
    by_key = dict(zip(("cos", "growth", "g_norm", "h_norm"), drawn, strict=True))
    for key in ("growth", "g_norm", "h_norm"):
        xs, ys, (below, above) = by_key[key]
        layers = [report["layers"][x] for x in xs]
        assert ys == [la[key] for la in layers]
        assert below == pytest.approx([la[key] - la[f"{key}_interval"][0] for la in layers])
        assert above == pytest.approx([la[f"{key}_interval"][1] - la[key] for la in layers])
    assert len(by_key["growth"][0]) == len(report["layers"]) - 1  # the last layer has no growth
