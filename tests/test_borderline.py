"""A gate must not flip on a random seed. z is estimated from null draws, so near ``null_z``
the draws would decide: the audit adds draws while a layer's 99.9 % interval straddles the
threshold, and a layer still straddling is borderline, counted neither as reached nor as
missing. Every bundled sample gives the same check statuses and exit code under any null
seed; a layer set at the threshold comes out borderline with its interval and wording."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from fa_audit.checks import depth_utility
from fa_audit.config import DepthUtility, Thresholds
from fa_audit.measure.null_band import CRITICAL, Reach, reach, z_interval
from fa_audit.report import AuditReport, Status

from .cli_runner import run
from .conftest import SAMPLES

BASELINES: dict[str, bool | str] = {
    **dict.fromkeys(["bp", "dfa", "dfa_penalty", "dfa_nofeedback", "dfa_ep1", "dfa_ep2", "dfa_ep3", "dfa_ep5"], True),
    **{"dfa_ep8": True, "small_cnn_dfa": "small_cnn_frozen", "vit_mini_dfa": "vit_mini_frozen"},
    **{"frozen": False, "fa_mlp": False},
}
"""Each sample with its frozen-blocks baseline (True: frozen.pt), as docs/samples.md audits it."""
SEEDS = (0, 1, 2, 3)


def _outcome(report: AuditReport) -> tuple[list[str], int]:
    return [c.status.value for c in report.checks], int(report.exit_code)


@pytest.mark.parametrize("name", BASELINES)
def test_every_sample_gives_the_same_statuses_and_exit_code_under_any_null_seed(
    name: str, audited: Callable[..., AuditReport]
) -> None:
    outcomes = {seed: _outcome(audited(name, baseline=BASELINES[name], seed=seed)) for seed in SEEDS}
    assert len(set(map(repr, outcomes.values()))) == 1, outcomes


def test_the_interval_is_the_delta_method_bound() -> None:
    low, high = z_interval(3.0, 320)
    se = (1 / 320 + 9 / (2 * 319)) ** 0.5
    assert (low, high) == pytest.approx((3.0 - CRITICAL * se, 3.0 + CRITICAL * se))
    assert reach(3.0, z_interval(3.0, 320), 3.0) is Reach.BORDERLINE
    assert reach(4.0, z_interval(4.0, 320), 3.0) is Reach.REACHED  # 4 - 3.29 * 0.15 > 3
    assert reach(2.0, z_interval(2.0, 320), 3.0) is Reach.MISSING
    assert reach(3.0, None, 3.0) is Reach.REACHED  # an older report: the point value, as it was judged


def test_a_layer_at_the_threshold_is_borderline_and_left_out_of_credit_reach(
    audited: Callable[..., AuditReport],
) -> None:
    report = audited("dfa")
    layers = report.measurements.layers
    at = [replace(layers[0]), replace(layers[1], z=2.0, null_draws=320), replace(layers[2], z=3.0, null_draws=320),
          replace(layers[3], z=0.0, null_draws=320), replace(layers[4], z=4.5, null_draws=320)]  # fmt: skip
    m = replace(report.measurements, layers=at)
    check = depth_utility(m, Thresholds(), None)
    assert check.values["layer_reach"] == {"h1": "missing", "h2": "borderline", "h3": "missing", "h4": "reached"}
    assert check.values["layers_borderline"] == ["h2"]
    assert check.values["credit_reach"] == pytest.approx(1 / 3)  # h4 of the decided h1, h3, h4
    assert check.status is Status.FAIL
    (message,) = check.messages
    low, high = z_interval(3.0, 320)
    assert "only 1 of 3 decided deep layers" in message
    assert f"h2 (z 3.00, 99.9 % interval {low:.2f} … {high:.2f} after 320 null draws)" in message
    assert "counted neither as reached nor as missing" in message

    loose = Thresholds(depth_utility=DepthUtility(min_credit_reach=0.3))
    passed = depth_utility(m, loose, None)
    assert passed.values["credit_reach_status"] == "pass"
    assert any("leaves out borderline at z = 3" in note for note in passed.notes)

    every = replace(m, layers=[at[0], *(replace(la, z=3.0, null_draws=320) for la in at[1:])])
    unassessed = depth_utility(every, Thresholds(), None)
    assert unassessed.values["credit_reach_status"] == "not_assessed"
    assert "every deep layer is borderline" in unassessed.messages[-1]


@pytest.mark.parametrize(("name", "layer", "bound"), [("fa_mlp", "h1", 80), ("dfa", "h2", None)])
def test_a_measured_layer_set_at_the_threshold_gets_more_draws_then_is_borderline(
    name: str, layer: str, bound: int | None, audited: Callable[..., AuditReport], tmp_path: Path
) -> None:
    """null_z set to the layer's own z: an FA layer's draws (each a backward walk) double up to
    the method's bound and the interval still holds null_z; a DFA layer's null is in closed form
    (no draws), and its bound's interval holds null_z."""
    z = audited(name).layer(layer).z
    assert z is not None
    (tmp_path / "t.yaml").write_text(f"depth_utility: {{null_z: {z}}}\n")
    code, out, err = run("run", SAMPLES / f"{name}.pt", "--config", tmp_path / "t.yaml", "--json", "-")
    assert code in (1, 3), err
    doc = json.loads(out)
    measured = next(la for la in doc["layers"] if la["name"] == layer)
    assert measured["null_draws"] == bound
    low, high = measured["z_interval"]
    assert low < z <= high
    depth = next(c for c in doc["checks"] if c["name"] == "depth_utility")
    if bound is None:
        assert high - low < 0.02 and measured["null_std_range"] is not None
        said = " ".join(depth["messages"] + depth["notes"])
        assert f"{layer} (z {z:.2f}, {low:.2f} … {high:.2f} by the closed-form null's bound)" in said
    assert layer in depth["values"]["layers_borderline"]
    assert depth["values"]["layer_reach"][layer] == "borderline"
    code, table, _ = run("run", SAMPLES / f"{name}.pt", "--config", tmp_path / "t.yaml")
    row = next(line for line in table.splitlines() if line.startswith(f"│ {layer} "))
    assert "~ │" in row and "~ borderline:" in table
