"""compare: per-layer alignment, regressions and the CI exit code, on the real samples."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import jsonschema
import pytest

from fa_audit import ExitCode, InputError
from fa_audit.report import AuditReport
from fa_audit.report.comparison import compare_reports
from fa_audit.report.schema import schema

from ..cli_runner import run
from ..conftest import SAMPLES

Audited = Callable[..., AuditReport]


def test_penalty_to_vanilla_dfa_regresses_scale_and_reference(audited: Audited) -> None:
    comparison = compare_reports(audited("dfa_penalty"), audited("dfa"))
    assert [r.split(":")[0] for r in comparison.regressions] == ["scale_stability", "reference_validity"]
    assert comparison.exit_code == ExitCode.WALK_BACK


def test_vanilla_to_penalty_dfa_is_no_regression(audited: Audited) -> None:
    comparison = compare_reports(audited("dfa"), audited("dfa_penalty"))
    assert comparison.regressions == [] and comparison.exit_code == ExitCode.TRUST


def test_the_networks_metric_and_gammas_are_set_side_by_side_with_their_errors(audited: Audited) -> None:
    a, b = audited("dfa_penalty"), audited("dfa")
    accuracy, headline, deep = compare_reports(a, b).overall()
    assert (accuracy.label, accuracy.a, accuracy.b) == ("accuracy", a.measurements.accuracy, b.measurements.accuracy)
    assert accuracy.a_se == a.measurements.metric_se and accuracy.delta_se == pytest.approx(
        math.hypot(a.measurements.metric_se or 0.0, b.measurements.metric_se or 0.0)
    )
    assert (headline.a, headline.b_se) == (a.measurements.aggregate.headline, b.measurements.aggregate.headline_se)
    layers = b.measurements.layers[1:]
    assert deep.b == pytest.approx(sum(la.cos or 0.0 for la in layers) / len(layers), rel=1e-12)
    assert deep.a_se == a.measurements.aggregate.deep_se and deep.delta == pytest.approx(deep.b - deep.a)  # type: ignore[operator]


def test_each_layers_dir_stab_is_compared_with_its_error(audited: Audited) -> None:
    """dir_stab ± its jackknife error for A and B, and Δ ± both errors in quadrature: dfa.pt's drift-
    dominated h0 (0.68) against the penalty sample's (0.23) is a difference of about eleven errors."""
    a, b = audited("dfa_penalty"), audited("dfa")
    pair = compare_reports(a, b).layers[0]
    la, lb = a.measurements.layers[0], b.measurements.layers[0]
    assert la.dir_stab is not None and lb.dir_stab is not None and la.dir_stab_se and lb.dir_stab_se
    assert pair.delta("dir_stab") == pytest.approx(lb.dir_stab - la.dir_stab)
    assert pair.delta_se("dir_stab") == pytest.approx(math.hypot(la.dir_stab_se, lb.dir_stab_se))
    assert (pair.delta("dir_stab") or 0) / (pair.delta_se("dir_stab") or 1) > 8
    code, out, _ = run("compare", SAMPLES / "dfa_penalty.pt", SAMPLES / "dfa.pt", "--no-color")
    assert code == ExitCode.WALK_BACK  # scale stability and reference validity regress
    row = next(line for line in out.splitlines() if "dir_stab±se" in line)
    assert f"{la.dir_stab:.3g}±" in row and f"+{lb.dir_stab - la.dir_stab:.3f}±" in row


def test_layers_align_by_module_and_a_deeper_nets_extra_layers_stay_visible(audited: Audited) -> None:
    """A depth ablation: B holds A's first four states (a shallower resmlp); A's last is one-sided."""
    a = audited("dfa")
    b = replace(audited("dfa_penalty"), measurements=replace(a.measurements, layers=a.measurements.layers[:4]))
    comparison = compare_reports(a, b)
    assert [p.name for p in comparison.layers] == ["h0", "h1", "h2", "h3", "h4"]
    last = comparison.layers[-1]
    assert last.a is not None and last.b is None and last.delta("g_norm") is None
    h1 = comparison.layers[1]
    assert h1.a is not None and h1.b is not None and h1.a.module == h1.b.module == "blocks.0"
    assert h1.delta("g_norm") == h1.b.g_norm - h1.a.g_norm


def test_two_architectures_are_not_compared_row_by_row(audited: Audited) -> None:
    """resmlp against mlp: B's rows were shown under A's module names."""
    with pytest.raises(InputError, match=r"dfa.pt: resmlp, hidden states embed, .*fa_mlp.pt: mlp, hidden states"):
        compare_reports(audited("dfa"), audited("fa_mlp"))


def test_cli_compare_exit_codes_follow_the_regression() -> None:
    code, out, _ = run("compare", SAMPLES / "dfa_penalty.pt", SAMPLES / "dfa.pt", "--no-color")
    assert code == ExitCode.WALK_BACK
    assert "✗ regression: scale_stability: passes for A, fails for B" in out
    assert "(absent)" not in out
    assert all(f"{quantity} ± se" in out for quantity in ("accuracy", "aggregate Γ", "deep Γ (h1..hL)"))
    network = _rows(out, "│")
    code, markdown, _ = run("compare", SAMPLES / "dfa_penalty.pt", SAMPLES / "dfa.pt", "--markdown", "-")
    assert _rows(markdown, "|") == network and len(network) == 3  # the Markdown's table is the terminal's
    code, out, _ = run("compare", SAMPLES / "dfa.pt", SAMPLES / "dfa_penalty.pt", "--no-color")
    assert code == ExitCode.TRUST and "no regression" in out


def _rows(text: str, bar: str) -> list[list[str]]:
    """The network table's rows: the cells of the lines that start with its quantities."""
    quantities = ("accuracy ± se", "aggregate Γ ± se", "deep Γ (h1..hL) ± se")
    cells = [[c.strip() for c in line.split(bar)[1:-1]] for line in text.splitlines() if line.startswith(bar)]
    return [row for row in cells if row and row[0] in quantities]


def test_cli_compare_json_holds_both_reports_and_the_regressions() -> None:
    code, out, _ = run("compare", SAMPLES / "dfa_penalty.pt", SAMPLES / "dfa.pt", "--json", "-")
    document = json.loads(out)
    assert code == ExitCode.WALK_BACK and document["exit_code"] == 1
    assert len(document["regressions"]) == 2
    for side in ("a", "b"):
        jsonschema.validate(document[side], schema())
    assert document["a"]["inputs"][-1]["sha256"] == document["b"]["inputs"][-1]["sha256"]  # same eval data


def test_compare_with_one_broken_side_is_an_input_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.pt"
    broken.write_bytes((SAMPLES / "dfa.pt").read_bytes()[:40_000])
    code, out, err = run("compare", SAMPLES / "dfa_penalty.pt", broken)
    assert code == ExitCode.INPUT_ERROR and out == ""
    assert "broken.pt" in err and "truncated or corrupt" in err and len(err.strip().splitlines()) == 1
