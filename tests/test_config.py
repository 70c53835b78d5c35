"""Thresholds YAML: defaults, merging, and every way a config can be wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fa_audit.config import Thresholds, load_thresholds
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
