"""The medians' intervals (‖h‖, growth, ‖g‖, ‖g‖/‖e‖): distribution-free order statistics, and the
checks that decide on them (scale stability, reference collapse) borderline where an interval
straddles the threshold, as the depth margin's and z's are."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from fa_audit import AuditReport, ExitCode, audit
from fa_audit.adapt import build_model
from fa_audit.adapt.fit_keys import fit_bundle
from fa_audit.api import data_path_for
from fa_audit.checks import reference_validity, scale_stability
from fa_audit.config import Thresholds, merge
from fa_audit.errors import InputError
from fa_audit.loading import load_bundle, load_eval_data
from fa_audit.measure.functional import median_intervals, median_ranks, medians
from fa_audit.report import Status
from fa_audit.report.recheck import recheck

from .cli_runner import run
from .conftest import SAMPLES


@pytest.mark.parametrize("n", [*range(1, 60), 99, 100, 101, 1000, 4096])
def test_the_ranks_are_the_tightest_that_hold_95_percent(n: int) -> None:
    """Against the binomial sums in exact integers: the ranks cover the median with at least 95 %,
    and one rank further in would not."""
    ranks = median_ranks(n, 0.95)

    def coverage(j: int) -> float:  # P(X_(j) ≤ median ≤ X_(n+1-j)) = 1 − 2 P(Binomial(n, ½) ≤ j − 1)
        return 1 - 2 * sum(math.comb(n, i) for i in range(j)) / 2**n

    if n <= 5:
        assert ranks is None and coverage(1) < 0.95
        return
    assert ranks is not None
    j, k = ranks
    assert k == n + 1 - j and 1 <= j <= k <= n
    assert coverage(j) >= 0.95 > coverage(j + 1)


def test_the_interval_holds_a_skewed_medians_truth_as_often_as_it_says() -> None:
    """2,000 eval sets of 60 log-normal values (the median is 1): the interval misses it in at most
    5 % of them, within the simulation's error, and not far less (it is the tightest that holds)."""
    g = torch.Generator().manual_seed(0)
    sets = torch.randn(2000, 60, generator=g, dtype=torch.float64).exp()
    found = median_intervals(sets, 0.95)
    missed = sum(not (lo <= 1.0 <= hi) for lo, hi in (f for f in found if f is not None))
    assert all(f is not None for f in found)
    assert 0.01 * 2000 < missed <= (0.05 + 3 * math.sqrt(0.05 * 0.95 / 2000)) * 2000


def test_a_row_holding_a_nan_or_an_infinity_has_no_interval() -> None:
    rows = torch.tensor([[1.0, 2, 3, 4, 5, 6, 7], [1, 2, math.nan, 4, 5, 6, 7], [1, 2, math.inf, 4, 5, 6, 7]])
    assert median_intervals(rows, 0.95) == [(1.0, 7.0), None, None]


def test_bp_medians_sit_inside_intervals_that_narrow_as_the_eval_set_grows(
    audited: Callable[..., AuditReport],
) -> None:
    """On bp.pt every median lies in its interval, and the intervals over 4,096 samples are about half
    as wide as over 1,024 (width ∝ 1/√N)."""
    whole, part = audited("bp").measurements.layers, audited("bp", max_samples=1024).measurements.layers
    for full, small in zip(whole, part, strict=True):
        for name in ("h_norm", "growth", "g_norm", "g_rel"):
            value, interval = getattr(full, name), getattr(full, f"{name}_interval")
            if value is None:
                assert interval is None and name == "growth" and full is whole[-1]
                continue
            assert interval[0] <= value <= interval[1]
            narrow, wide = interval[1] - interval[0], getattr(small, f"{name}_interval")
            assert 0.3 < narrow / (wide[1] - wide[0]) < 0.8, (full.name, name)


def test_the_interval_is_the_order_statistics_of_the_samples_norms(audited: Callable[..., AuditReport]) -> None:
    """‖h_l‖ per sample recomputed here, by the model's own forward over the eval data: the
    reported median and interval are its ranked values (float32 norms: to their rounding)."""
    bundle = fit_bundle(load_bundle(SAMPLES / "dfa.pt"))
    model = build_model(bundle)
    data = load_eval_data(data_path_for(bundle, None), "labels")
    with torch.no_grad():
        _, hidden = model.forward_hidden(torch.as_tensor(data.x[0 : data.samples]).float())
    norms = torch.stack([h.flatten(1).double().norm(dim=1) for h in hidden])
    j, k = median_ranks(norms.shape[1], 0.95) or (0, 0)
    report = audited("dfa").measurements.layers
    for row, layer in zip(norms, report, strict=True):
        ranked = row.sort().values
        assert layer.h_norm == pytest.approx(medians(row[None])[0], rel=1e-5)
        assert layer.h_norm_interval == pytest.approx((float(ranked[j - 1]), float(ranked[k - 1])), rel=1e-5)


def _with(limit: float, key: str = "scale_stability", name: str = "max_block_growth") -> Thresholds:
    return merge(Thresholds(), {key: {name: limit}})


def test_a_growth_limit_inside_the_interval_is_borderline_not_a_verdict(
    audited: Callable[..., AuditReport], tmp_path: Path
) -> None:
    """bp.pt's h0 grows 2.53× (interval 2.51 … 2.55): a limit inside the interval leaves scale
    stability not assessed, naming the layer; below the interval it fails, above it passes."""
    m = audited("bp").measurements
    low, high = m.layers[0].growth_interval or (0.0, 0.0)
    inside = scale_stability(m, _with((low + high) / 2))
    assert inside.status is Status.NOT_ASSESSED and inside.values["layers_borderline"] == ["h0"]
    assert "straddles" in inside.messages[0] and f"{low:.3g} … {high:.3g}" in inside.messages[0]
    assert scale_stability(m, _with(low * 0.999)).status is Status.FAIL
    assert scale_stability(m, _with(high)).status is Status.PASS
    config = tmp_path / "limit.yaml"
    config.write_text(f"scale_stability: {{max_block_growth: {(low + high) / 2}}}\n")
    code, out, _ = run("run", SAMPLES / "bp.pt", "--config", config, "--no-color")
    assert code == ExitCode.INCOMPLETE and "INCOMPLETE" in out and "growth borderline at h0" in out


def test_a_reference_near_its_floor_is_borderline_until_its_whole_interval_is_below(
    audited: Callable[..., AuditReport],
) -> None:
    """dfa_ep5.pt: ‖g‖/‖e‖ 9.5e-8 with its 95 % interval reaching above 1e-7: not assessed, and no
    Mode 1; dfa_ep8.pt (3.8e-8, the whole interval below): Mode 1. Where other findings fail the
    check, the borderline layers are a note."""
    ep5 = audited("dfa_ep5").measurements
    check = reference_validity(ep5, Thresholds())
    assert check.status is Status.NOT_ASSESSED and check.values["mode"] is None
    assert check.values["layers_borderline"] == ["h1", "h2", "h3", "h4"]
    for layer in ep5.layers[1:]:
        assert layer.g_rel is not None and layer.g_rel_interval is not None
        assert layer.g_rel < 1e-7 < layer.g_rel_interval[1]
    assert reference_validity(ep5, _with(0.5, "reference_validity", "min_relative_grad_norm")).status is Status.FAIL
    drift_fails = merge(
        Thresholds(), {"reference_validity": {"direction_stability_fails": True, "max_direction_stability": 0.01}}
    )
    failing = reference_validity(ep5, drift_fails)
    assert failing.status is Status.FAIL and any("borderline" in note for note in failing.notes)
    ep8 = reference_validity(audited("dfa_ep8").measurements, Thresholds())
    assert ep8.status is Status.FAIL and ep8.values["mode"] == "mode_1"


def test_a_report_written_before_the_intervals_is_judged_on_its_medians(tmp_path: Path) -> None:
    """dfa_ep5.pt's report without the intervals: its stated reference-validity failure is what its
    numbers give, as they gave it then; with them, the same statement is refused as not following."""
    code, out, _ = run("run", SAMPLES / "dfa_ep5.pt", "--json", "-")
    assert code == ExitCode.WALK_BACK  # scale stability fails
    report = json.loads(out)
    for layer in report["layers"]:
        for name in ("h_norm", "growth", "g_norm", "g_rel"):
            layer.pop(f"{name}_interval")
    checks = {c["name"]: c for c in report["checks"]}
    checks["reference_validity"]["status"] = "fail"
    recheck(report, tmp_path / "old.json")
    for layer in report["layers"][1:]:
        layer["g_rel_interval"] = [layer["g_rel"] * 0.9, 1.1e-7]
    with pytest.raises(InputError, match="reference_validity says 'fail'"):
        recheck(report, tmp_path / "old.json")


@pytest.mark.parametrize(
    ("sample", "layer", "name", "interval"),
    [
        ("bp", 0, "growth", [60.0, 70.0]),
        ("bp", 2, "dir_stab", [0.5, 0.6]),
        ("small_cnn_dfa", 0, "rank_ratio", [0.5, 0.6]),
    ],
)
def test_a_report_whose_interval_leaves_out_its_value_is_refused(
    tmp_path: Path, sample: str, layer: int, name: str, interval: list[float]
) -> None:
    code, out, _ = run("run", SAMPLES / f"{sample}.pt", "--json", "-")
    assert code == ExitCode.INCOMPLETE  # no baseline: the margin is not assessed
    report = json.loads(out)
    recheck(report, tmp_path / "report.json")
    report["layers"][layer][f"{name}_interval"] = interval
    with pytest.raises(InputError, match=f"{name} lies outside its {name}_interval"):
        recheck(report, tmp_path / "report.json")


def test_a_collapse_after_a_borderline_growth_is_still_named_mode_1(audited: Callable[..., AuditReport]) -> None:
    """dfa.pt with the growth limit inside h0's interval (1.66e6 … 2.15e6): scale stability is borderline,
    and the collapse below it is still named after the stream's growth (Mode 1), not 'the stream did
    not grow'."""
    m = audited("dfa").measurements
    low, high = m.layers[0].growth_interval or (0.0, 0.0)
    limit = _with((low + high) / 2)
    assert scale_stability(m, limit).status is Status.NOT_ASSESSED
    check = reference_validity(m, limit)
    assert check.status is Status.FAIL and check.values["mode"] == "mode_1"
    assert "after the stream grew" in check.messages[0]


@pytest.mark.parametrize("n", [10**5, 10**6, 10**9])
def test_many_samples_give_the_normal_approximations_ranks(n: int) -> None:
    """Where the binomial is all but normal, j is n/2 − 1.96 √n / 2 to within a rank (the exact sum
    runs over the 16 standard deviations below n/2 only, so a billion samples cost no more than this)."""
    ranks = median_ranks(n, 0.95)
    assert ranks is not None
    assert abs(ranks[0] - (n / 2 - 1.959964 * math.sqrt(n) / 2)) <= 1.5


def test_dir_stab_carries_its_jackknifes_interval(audited: Callable[..., AuditReport]) -> None:
    """bp.pt: 64 minibatches in eight jackknife groups, so dir_stab ± t(7 dof, 2.365) · its error."""
    for layer in audited("bp").measurements.layers:
        assert layer.dir_stab is not None and layer.dir_stab_se is not None and layer.dir_stab_interval is not None
        low, high = layer.dir_stab_interval
        half = 2.3646 * layer.dir_stab_se
        assert (low, high) == pytest.approx((layer.dir_stab - half, layer.dir_stab + half), rel=1e-4)


def test_a_drift_gate_does_not_walk_the_positive_control_back_on_its_noise(audited: Callable[..., AuditReport]) -> None:
    """With direction_stability_fails set, the BP sample's dir_stab (0.26–0.39, each ± about 0.1 at 95 %)
    straddles 0.30 at every layer: borderline, not a failure (it failed on the point values before). A
    limit below every interval fails; one above them passes."""
    m = audited("bp").measurements
    gate = {"direction_stability_fails": True}
    at = merge(Thresholds(), {"reference_validity": gate})
    check = reference_validity(m, at)
    assert check.status is Status.NOT_ASSESSED and check.values["layers_borderline"] == ["h0", "h1", "h2", "h3", "h4"]
    assert "direction stability is borderline" in check.messages[0]
    below = merge(Thresholds(), {"reference_validity": {**gate, "max_direction_stability": 0.15}})
    assert reference_validity(m, below).status is Status.FAIL
    above = merge(Thresholds(), {"reference_validity": {**gate, "max_direction_stability": 0.6}})
    assert reference_validity(m, above).status is Status.PASS
    default = reference_validity(m, Thresholds())
    assert default.status is Status.PASS and any("direction stability > 0.3 at h3" in n for n in default.notes)


def test_wide_shows_the_intervals_and_the_ranks_errors_in_80_columns(audited: Callable[..., AuditReport]) -> None:
    """`--wide` adds, beside the diagnostics, each layer's growth, ‖g‖/‖e‖ and dir_stab intervals and z's,
    each end to three significant digits, and the effective ranks ± their errors with the ratio's
    interval; at 80 columns nothing is cut."""
    code, out, _ = run("run", SAMPLES / "dfa.pt", "--wide", "--no-color", env={"COLUMNS": "80"})
    assert code == ExitCode.WALK_BACK and "diagnostics (first batch)" in out
    h0 = audited("dfa").measurements.layers[0]
    row = _first_row(out, "intervals the checks decide on")
    assert "1.66e6–2.15e6" in row and h0.growth_interval == pytest.approx((1.66e6, 2.15e6), rel=5e-3)
    low, high = h0.dir_stab_interval or (0.0, 0.0)
    assert f"{low:.3f}–{high:.3f}" in row
    row = _first_row(out, "effective ranks (first batch)")
    assert h0.rank_ratio_interval is not None and h0.credit_rank is not None and h0.credit_rank_se is not None
    low, high = h0.rank_ratio_interval
    assert f"{low:.3g}–{high:.3g}" in row and f"{h0.credit_rank:.2f}±{h0.credit_rank_se:#.2g}" in row


def _first_row(out: str, title: str) -> str:
    """h0's row of the table under ``title``, whose every line fits 80 columns uncut."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    table = lines[start : start + 10]
    assert all(len(line) <= 80 for line in table) and "…" not in "".join(table)
    return next(line for line in table if line.startswith("│ h0"))


def test_an_eval_set_too_small_for_an_interval_says_its_medians_are_judged_alone() -> None:
    """Five samples have no distribution-free 95 % interval for a median: the checks then decide on the
    medians themselves (the protocol's rule), and the report says so; six have one, and no note."""
    five = audit(SAMPLES / "dfa.pt", device="cpu", max_samples=5)
    assert five.measurements.layers[0].growth_interval is None
    assert (
        "5 eval samples are too few for a median's 95 % interval (at least 6): growth and ‖g‖/‖e‖ are judged on "
        "their medians alone, with no uncertainty"
    ) in five.notes
    six = audit(SAMPLES / "dfa.pt", device="cpu", max_samples=6)
    assert six.measurements.layers[0].growth_interval is not None
    assert not any("too few for a median" in note for note in six.notes)
