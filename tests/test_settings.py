"""One settings object: every audit option is a field of AuditSettings, each command of the
CLI takes it under the field's name, and every entry point takes the same object."""

from __future__ import annotations

import inspect
from dataclasses import fields

import pytest

from fa_audit import AuditSettings, audit, compare
from fa_audit.cli import compare as compare_command
from fa_audit.cli import run as run_command

from .conftest import SAMPLES, repeatable


def test_every_setting_is_an_option_of_run_under_its_name() -> None:
    options = set(inspect.signature(run_command).parameters)
    # --no-cache; the command line is in a process group exactly when torchrun launched it.
    names = {f.name for f in fields(AuditSettings)} - {"use_cache", "distributed"}
    assert names <= options and "no_cache" in options
    assert names - {"feedback"} <= set(inspect.signature(compare_command).parameters)  # one feedback per file


def test_one_settings_object_serves_every_call() -> None:
    settings = AuditSettings(device="cpu", max_samples=256, seed=3)
    report = audit(SAMPLES / "dfa.pt", settings)
    assert report.settings["seed"] == 3 and report.measurements.samples == 256
    assert repeatable(audit(SAMPLES / "dfa.pt", settings, seed=0).to_dict()["layers"]) == repeatable(
        audit(SAMPLES / "dfa.pt", device="cpu", max_samples=256).to_dict()["layers"]
    )  # keyword changes are the same settings
    comparison = compare(SAMPLES / "dfa_penalty.pt", SAMPLES / "dfa.pt", settings)
    assert comparison.a.settings["seed"] == comparison.b.settings["seed"] == 3


def test_an_unknown_setting_is_named() -> None:
    with pytest.raises(TypeError, match="unknown audit settings: batchsize, sed"):
        audit(SAMPLES / "dfa.pt", sed=1, batchsize=2)
