"""Thresholds YAML: defaults, merging, and every way a config can be wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fa_audit.config import Thresholds, load_thresholds, looser_than_protocol
from fa_audit.errors import InputError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "t.yaml"
    path.write_text(text)
    return path


def test_defaults_are_the_protocol_papers() -> None:
    t = Thresholds()
    assert t.scale_stability.max_block_growth == 50
    assert t.reference_validity.min_grad_norm == 1e-7 and t.reference_validity.min_fp64_agreement == 0.999
    assert t.reference_validity.max_direction_stability == 0.30
    assert t.reference_validity.direction_stability_fails is False
    assert (t.depth_utility.min_margin_pp, t.depth_utility.min_credit_reach, t.depth_utility.null_z) == (2.0, 0.5, 3.0)
    assert t.null_calibration.draws == 20


def test_yaml_merges_over_defaults_and_round_trips(tmp_path: Path) -> None:
    t = load_thresholds(write(tmp_path, "reference_validity: {direction_stability_fails: true, min_grad_norm: 1e-6}\n"))
    assert t.reference_validity.direction_stability_fails is True
    assert t.reference_validity.min_grad_norm == 1e-6  # YAML 1.1 reads '1e-6' as a string; we accept it
    assert t.scale_stability.max_block_growth == 50
    assert load_thresholds(write(tmp_path, t.to_yaml())) == t
    assert yaml.safe_load(t.to_yaml())["null_calibration"] == {
        "draws": 20,
        "samples": 1024,
        "max_draws": 320,
        "max_walk_draws": 80,
        "walk_samples": 128,
    }


def test_null_samples_zero_means_every_sample(tmp_path: Path) -> None:
    assert load_thresholds(write(tmp_path, "null_calibration: {samples: 0}\n")).null_calibration.samples == 0


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    assert load_thresholds(write(tmp_path, "")) == Thresholds()


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("scale_stability: {max_block_growth: [1, 2\n", "not valid YAML at line"),
        ("scale_stabilty: {max_block_growth: 5}\n", "unknown section 'scale_stabilty'"),
        ("scale_stability: {max_growth: 5}\n", "unknown key scale_stability.max_growth"),
        ("scale_stability: {max_block_growth: fifty}\n", "must be a number"),
        ("scale_stability: {max_block_growth: -5}\n", "finite positive"),
        ("reference_validity: {min_grad_norm: .nan}\n", "finite positive"),
        ("reference_validity: {direction_stability_fails: 1}\n", "true or false"),
        ("null_calibration: {draws: 2.5}\n", "whole number"),
        ("null_calibration: {samples: -1}\n", "whole number from 0"),
        ("depth_utility: {min_credit_reach: 1.5}\n", "at most 1"),
        ("- 1\n- 2\n", "mapping of sections"),
        ("depth_utility: 3\n", "must be a mapping"),
    ],
)
def test_bad_configs_are_input_errors_naming_file_and_key(tmp_path: Path, text: str, needle: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(InputError) as err:
        load_thresholds(path)
    assert needle in str(err.value) and str(path) in str(err.value)


def test_a_margin_of_zero_is_allowed(tmp_path: Path) -> None:
    assert load_thresholds(write(tmp_path, "depth_utility: {min_margin_pp: 0}\n")).depth_utility.min_margin_pp == 0


def test_only_gates_set_looser_than_the_protocols_are_named_with_both_values(tmp_path: Path) -> None:
    assert looser_than_protocol(Thresholds()) is None
    stricter = "scale_stability: {max_block_growth: 10}\ndepth_utility: {null_z: 4, min_margin_pp: 3}\n"
    assert looser_than_protocol(load_thresholds(write(tmp_path, stricter))) is None
    precision = "null_calibration: {draws: 40}\ndepth_utility: {margin_confidence: 0.99, min_rank_ratio: 0.01}\n"
    assert looser_than_protocol(load_thresholds(write(tmp_path, precision))) is None  # no bar lowered
    looser = (
        "scale_stability: {max_block_growth: 1000}\nreference_validity: {min_relative_grad_norm: 1e-9}\n"
        "depth_utility: {null_z: 2, min_credit_reach: 0.25, margin_confidence: 0.5, min_margin_pp: 5}\n"
    )
    note = looser_than_protocol(load_thresholds(write(tmp_path, looser)))
    assert note == (
        "thresholds looser than the protocol's: scale_stability.max_block_growth 1000 (the protocol's 50), "
        "reference_validity.min_relative_grad_norm 1e-09 (the protocol's 1e-07), depth_utility.margin_confidence "
        "0.5 (the protocol's 0.95), depth_utility.min_credit_reach 0.25 (the protocol's 0.5), depth_utility.null_z 2 "
        "(the protocol's 3); a TRUST under them is not the protocol's"
    )
    for first in (0, 2):  # h0 counted, or h1 left out: either moves what credit reach counts
        moved = looser_than_protocol(load_thresholds(write(tmp_path, f"depth_utility: {{first_deep_layer: {first}}}")))
        assert moved == (
            f"thresholds looser than the protocol's: depth_utility.first_deep_layer {first} (the protocol's 1); "
            "a TRUST under them is not the protocol's"
        )
