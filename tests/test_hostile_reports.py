"""Hostile inputs, round 3: reports handed to ``summarize``. A report is judged by the
reader's thresholds (``--config``, the defaults otherwise), never by the ones it carries,
and with ``FA_AUDIT_REPORT_KEY`` set a report whose HMAC does not verify is refused. Real
processes, as in test_hostile_processes.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fa_audit import ExitCode
from fa_audit.api import audit
from fa_audit.report.document import dumps

from .conftest import SAMPLES
from .test_hostile_processes import _clean, fa_audit

KEY = {"FA_AUDIT_REPORT_KEY": "ci-secret"}


@pytest.fixture(scope="module")
def penalty() -> dict[str, Any]:
    """dfa_penalty.pt with its frozen baseline: depth utility fails on its margin and reach."""
    report: dict[str, Any] = json.loads(
        dumps(audit(SAMPLES / "dfa_penalty.pt", baseline=SAMPLES / "frozen.pt", max_samples=512, device="cpu"))
    )
    assert report["exit_code"] == ExitCode.WALK_BACK
    return report


def _loosened(report: dict[str, Any]) -> dict[str, Any]:
    """Thresholds that pass its credit reach, a baseline low enough for its margin, and
    statuses, verdict and exit code to match: a report consistent with itself. The baseline
    is a fact only the report holds (named as taken from it; a keyed report protects it)."""
    forged = json.loads(json.dumps(report))
    forged["config"]["depth_utility"].update(min_credit_reach=0.01, null_z=0.01)
    forged["baseline_accuracy"] = forged["baseline"]["accuracy"] = 0.5
    for check in forged["checks"]:
        check.update(status="pass", messages=[])
    forged.update(verdict="TRUST", exit_code=0)
    return forged


def _summarize(tmp: Path, report: object, *args: object, env: dict[str, str] | None = None) -> Any:
    (tmp / "r.json").write_text(json.dumps(report))
    result = fa_audit("summarize", tmp / "r.json", *args, cwd=tmp, env=env)
    _clean(result.stderr + result.stdout)
    return result


def test_loosened_thresholds_in_a_report_do_not_judge_it(penalty: dict[str, Any], tmp_path: Path) -> None:
    forged = _loosened(penalty)
    result = _summarize(tmp_path, forged, "--no-color", "--json", tmp_path / "out.json")
    assert result.returncode == ExitCode.WALK_BACK, result.stdout + result.stderr
    assert "depth_utility pass -> fail by these thresholds" in result.stdout
    assert "judged by the default thresholds; taken from the reports as written: per-layer numbers, accuracy, " \
        "baseline accuracies" in result.stdout  # fmt: skip
    judged = json.loads((tmp_path / "out.json").read_text())[0]
    assert judged["verdict"] == penalty["verdict"] and judged["exit_code"] == ExitCode.WALK_BACK
    assert judged["config"]["depth_utility"]["null_z"] == 3.0
    assert judged["judged"]["taken_from_report"][2].startswith("baseline accuracy 0.5000 (checkpoint")
    assert judged["checks"][2]["messages"][0].startswith("Mode 2 (no depth utility): credit reach 0.25 < 0.5")


def test_the_readers_config_judges(penalty: dict[str, Any], tmp_path: Path) -> None:
    """The same loosening, given by the reader in --config, is the reader's to make."""
    (tmp_path / "loose.yaml").write_text("depth_utility: {min_margin_pp: 0.01, min_credit_reach: 0.01, null_z: 0.01}\n")
    result = _summarize(tmp_path, _loosened(penalty), "--config", tmp_path / "loose.yaml", "--no-color")
    assert result.returncode == ExitCode.TRUST, result.stdout + result.stderr
    assert f"judged by the thresholds of {tmp_path / 'loose.yaml'}" in result.stdout


def test_keyed_reports_verify(penalty: dict[str, Any], tmp_path: Path) -> None:
    run = fa_audit("run", SAMPLES / "dfa.pt", "--max-samples", "64", "--json", tmp_path / "k.json", "-q",
                   cwd=tmp_path, env=KEY)  # fmt: skip
    keyed = json.loads((tmp_path / "k.json").read_text())
    assert run.returncode == keyed["exit_code"] and len(keyed["hmac"]) == 64
    assert _summarize(tmp_path, keyed, env=KEY).returncode == keyed["exit_code"]

    tampered = {**keyed, "accuracy": keyed["accuracy"] + 0.01}
    refused = _summarize(tmp_path, tampered, env=KEY)
    assert refused.returncode == ExitCode.INPUT_ERROR and "HMAC does not verify" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    other_key = _summarize(tmp_path, keyed, env={"FA_AUDIT_REPORT_KEY": "another"})
    assert other_key.returncode == ExitCode.INPUT_ERROR and "r.json" in other_key.stderr
    unkeyed = _summarize(tmp_path, penalty, env=KEY)
    assert unkeyed.returncode == ExitCode.INPUT_ERROR and "no HMAC" in unkeyed.stderr


def test_an_empty_key_is_an_error_and_no_key_is_said(penalty: dict[str, Any], tmp_path: Path) -> None:
    """A fork's pull request reads an unset secret as "": that must not switch verification off.
    Without a key, every report read says it was not verified; --require-key refuses it."""
    empty = _summarize(tmp_path, penalty, env={"FA_AUDIT_REPORT_KEY": ""})
    assert empty.returncode == ExitCode.INPUT_ERROR and "FA_AUDIT_REPORT_KEY is set but empty" in empty.stderr
    assert len(empty.stderr.strip().splitlines()) == 1
    written = fa_audit("run", SAMPLES / "dfa.pt", "--max-samples", "64", "--json", tmp_path / "e.json", "-q",
                       cwd=tmp_path, env={"FA_AUDIT_REPORT_KEY": "  "})  # fmt: skip
    assert written.returncode == ExitCode.INPUT_ERROR and "set but empty" in written.stderr
    (tmp_path / "p.json").write_text(json.dumps(penalty))
    plain = fa_audit("summarize", tmp_path / "p.json", "--json", "-", cwd=tmp_path)
    [judged] = json.loads(plain.stdout)
    assert judged["judged"]["verified"] is False
    table = fa_audit("summarize", tmp_path / "p.json", "--no-color", cwd=tmp_path).stdout
    assert "not verified: no FA_AUDIT_REPORT_KEY was set" in table
    required = fa_audit("summarize", tmp_path / "p.json", "--require-key", cwd=tmp_path)
    assert required.returncode == ExitCode.INPUT_ERROR and "--require-key is given" in required.stderr


@pytest.mark.parametrize(
    ("forge", "said"),
    [
        (lambda la: la.update(z=9.0), "z 9.0 is not (cos − null_mean) / null_std"),
        (lambda la: la.update(null_std_range=[la["null_std"] * 2, la["null_std"] * 3]), "null_std lies outside"),
        (lambda la: la.update(null_std_range=[la["null_std"] / 2, la["null_std"] * 2]), None),
        (lambda la: la.update(null_draws=20), "states both null draws and a closed-form null"),
    ],
)
def test_a_forged_null_band_is_refused(penalty: dict[str, Any], tmp_path: Path, forge: Any, said: str | None) -> None:
    """A deep layer's z forged above null_z, or a closed-form range that does not hold its σ: the
    band must be what its own numbers give. A range made wider, still holding σ, is a per-layer
    number taken as written, like Γ itself (a keyed report protects it)."""
    forged = json.loads(json.dumps(penalty))
    layer = forged["layers"][3]
    assert layer["null_std_range"] is not None  # DFA: the null is in closed form
    forge(layer)
    result = _summarize(tmp_path, forged, "--no-color")
    if said is None:  # wider, still holding σ: the numbers as written, judged as they fall
        assert result.returncode in (ExitCode.WALK_BACK, ExitCode.INCOMPLETE), result.stdout + result.stderr
        return
    assert result.returncode == ExitCode.INPUT_ERROR, result.stdout + result.stderr
    assert f"layer h3 {said}" in result.stderr


@pytest.mark.parametrize("bounds", [0, [-1.0, 1.0], [0.01], "0.01"])
def test_a_null_range_of_another_shape_is_one_sentence(penalty: dict[str, Any], tmp_path: Path, bounds: Any) -> None:
    """null_std_range is null or two positive numbers: anything else (a number, a negative bound, one
    bound) is the schema's sentence, not an internal error (a bare 0 was exit 4) or a judgement."""
    forged = json.loads(json.dumps(penalty))
    forged["layers"][3]["null_std_range"] = bounds
    result = _summarize(tmp_path, forged, "--no-color")
    assert result.returncode == ExitCode.INPUT_ERROR, result.stdout + result.stderr
    assert "layers[3].null_std_range must take exactly one of its 2 forms" in result.stderr
