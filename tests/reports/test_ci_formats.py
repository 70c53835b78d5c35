"""The formats a CI reads natively, on the bundled samples: SARIF 2.1.0 (valid against the
OASIS schema shipped in tests/schemas), JUnit XML (read back by junitparser, a consumer
CI tooling uses), several formats from one run, and the GitHub Action and pre-commit hook
run as the command lines they define."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from ..cli_runner import run
from ..conftest import ROOT, SAMPLES

junitparser = pytest.importorskip("junitparser")

SARIF_SCHEMA = json.loads((ROOT / "tests" / "schemas" / "sarif-schema-2.1.0.json").read_text())
CHECKS = ["scale_stability", "reference_validity", "depth_utility"]
BP_TRUST = ("run", SAMPLES / "bp.pt", "--baseline", SAMPLES / "frozen.pt")


def _sarif(*args: object) -> tuple[int, dict[str, Any]]:
    code, out, err = run(*args, "--sarif", "-")
    assert code in (0, 1, 3), err
    log = json.loads(out)
    jsonschema.Draft4Validator(SARIF_SCHEMA).validate(log)
    return code, log


def test_sarif_names_each_failing_check_of_dfa_and_none_of_bp() -> None:
    code, log = _sarif("run", SAMPLES / "dfa.pt", "--baseline", SAMPLES / "frozen.pt")
    assert code == 1
    (run_,) = log["runs"]
    assert [rule["id"] for rule in run_["tool"]["driver"]["rules"]] == [*CHECKS, "thresholds"]
    results = run_["results"]
    assert [(r["ruleId"], r["level"]) for r in results] == [(c, "error") for c in CHECKS]
    uri = results[0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    assert uri == (SAMPLES / "dfa.pt").as_uri()
    depth = results[2]["message"]["text"]
    assert "measured margin" in depth and "threshold margin ≥ 2.0 pp" in depth and "credit reach" in depth

    code, log = _sarif(*BP_TRUST)
    assert code == 0 and log["runs"][0]["results"] == []


def test_sarif_levels_a_check_not_assessed_as_a_warning_and_a_relative_path_stays_relative(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(ROOT)
    code, log = _sarif("run", "sample_checkpoints/bp.pt")
    assert code == 3
    (result,) = log["runs"][0]["results"]
    assert (result["ruleId"], result["level"]) == ("depth_utility", "warning")
    assert result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "sample_checkpoints/bp.pt"


def test_sarif_of_compare_is_one_result_per_regression() -> None:
    code, log = _sarif("compare", SAMPLES / "dfa_penalty.pt", SAMPLES / "dfa.pt")
    assert code == 1
    results = log["runs"][0]["results"]
    assert {r["ruleId"] for r in results} == {"scale_stability", "reference_validity"}
    assert all(r["message"]["text"].startswith(f"{r['ruleId']}: passes for A, fails for B") for r in results)


def _junit(path: Path) -> Any:
    xml = junitparser.JUnitXml.fromfile(str(path))
    return list(xml)


def test_junit_is_a_suite_per_checkpoint_with_failures_and_skips_a_consumer_reads(tmp_path: Path) -> None:
    out = tmp_path / "junit.xml"
    code, _, err = run("run", SAMPLES / "dfa.pt", SAMPLES / "bp.pt", "--junit", out, "--quiet")
    assert code == 1, err
    dfa, bp = _junit(out)
    assert dfa.name == str(SAMPLES / "dfa.pt") and (dfa.tests, dfa.failures, dfa.skipped) == (3, 3, 0)
    assert (bp.tests, bp.failures, bp.skipped) == (3, 0, 1)
    cases = {case.name: case for case in dfa}
    assert list(cases) == CHECKS
    (failure,) = cases["scale_stability"].result
    assert isinstance(failure, junitparser.Failure)
    assert failure.message.startswith("scale_stability FAIL: measured max growth 1.89e+06× at h0; threshold growth ≤")
    (skipped,) = {case.name: case for case in bp}["depth_utility"].result
    assert isinstance(skipped, junitparser.Skipped) and "margin not assessed" in skipped.message
    assert all(case.is_passed for case in bp if case.name != "depth_utility")


def test_junit_of_a_trusted_checkpoint_passes_every_case(tmp_path: Path) -> None:
    code, _, err = run(*BP_TRUST, "--junit", tmp_path / "j.xml", "--quiet")
    assert code == 0, err
    (suite,) = _junit(tmp_path / "j.xml")
    assert (suite.tests, suite.failures, suite.skipped, suite.errors) == (3, 0, 0, 0)
    assert all(case.is_passed for case in suite)


def test_one_run_writes_every_format_and_none_onto_an_input(tmp_path: Path) -> None:
    targets = {f: tmp_path / f"r.{f}" for f in ("json", "markdown", "sarif", "junit")}
    options = [str(x) for f, path in targets.items() for x in (f"--{f}", path)]
    code, _, err = run("run", SAMPLES / "dfa.pt", *options, "--quiet")
    assert code == 1, err
    assert json.loads(targets["json"].read_text())["verdict"] == "WALK_BACK"
    jsonschema.Draft4Validator(SARIF_SCHEMA).validate(json.loads(targets["sarif"].read_text()))
    assert _junit(targets["junit"])[0].failures == 3
    before = (SAMPLES / "dfa.pt").read_bytes()
    code, _, err = run("run", SAMPLES / "dfa.pt", "--junit", SAMPLES / "dfa.pt", "--quiet")
    assert code == 2 and "--junit" in err and (SAMPLES / "dfa.pt").read_bytes() == before
    code, _, err = run("run", SAMPLES / "dfa.pt", "--junit", "-", "--sarif", "-")
    assert code == 2 and "only one of --sarif and --junit can write to standard output" in err


def test_thresholds_a_pull_request_loosened_are_said_wherever_the_verdict_is_read(tmp_path: Path) -> None:
    """A thresholds file is the one input a pull request can loosen a gate with, and the verdict then
    is not the protocol's: the positive control stays TRUST, with a warning annotation, a note in the
    JSON, and, read again by `summarize`, the note of the reader's thresholds only."""
    loose = tmp_path / "loose.yaml"
    loose.write_text("scale_stability: {max_block_growth: 1000}\ndepth_utility: {null_z: 2, min_margin_pp: 3}\n")
    said = "thresholds looser than the protocol's: scale_stability.max_block_growth 1000 (the protocol's 50), "
    said += "depth_utility.null_z 2 (the protocol's 3); a TRUST under them is not the protocol's"
    code, out, err = run(*BP_TRUST, "--config", loose, "--format", "github", "--json", tmp_path / "r.json")
    assert code == 0, err
    warnings = [line for line in out.splitlines() if line.startswith("::warning title=fa-audit thresholds")]
    assert warnings == [f"::warning title=fa-audit thresholds::{said}"]
    assert json.loads((tmp_path / "r.json").read_text())["notes"] == [said]
    code, out, err = run(*BP_TRUST, "--format", "github")
    assert code == 0 and "::warning" not in out, err
    code, log = _sarif(*BP_TRUST, "--config", loose)  # code scanning: a warning of its own rule
    assert code == 0 and [(r["ruleId"], r["level"], r["message"]["text"]) for r in log["runs"][0]["results"]] == [
        ("thresholds", "warning", said)
    ]
    for twice in (("run", SAMPLES / "bp.pt", SAMPLES / "bp.pt"), ("compare", SAMPLES / "bp.pt", SAMPLES / "bp.pt")):
        code, out, err = run(*twice, "--config", loose, "--format", "github")  # a trajectory, a comparison: once
        assert code in (0, 3) and out.count("::warning title=fa-audit thresholds::") == 1, err
    code, out, err = run("summarize", tmp_path / "r.json", "--json", "-")
    assert code == 0 and json.loads(out)[0]["notes"] == [], err  # judged by the defaults: nothing loosened
    code, out, err = run("summarize", tmp_path / "r.json", "--config", loose, "--json", "-")
    assert code == 0 and json.loads(out)[0]["notes"] == [said], err
    twice = [tmp_path / "r.json", tmp_path / "r.json"]  # a trajectory says it once under its table
    code, _, err = run("summarize", *twice, "--config", loose, "--markdown", tmp_path / "t.md")
    lines = (tmp_path / "t.md").read_text().splitlines()
    assert code == 0 and (lines.count(f"- {said}"), lines.count(f"- · {said}")) == (1, 2), err  # and each report's


def _fa_audit_on_path(tmp_path: Path) -> dict[str, str]:
    """An environment whose PATH finds ``fa-audit`` (this interpreter's entry point, or a shim)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "fa-audit"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m fa_audit "$@"\n')
    shim.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "COLUMNS": "120"}


def _action_step(step_id: str) -> dict[str, Any]:
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    step: dict[str, Any] = next(s for s in action["runs"]["steps"] if s.get("id") == step_id)
    return step


@pytest.mark.skipif(shutil.which("bash") is None, reason="the action's steps are bash")
@pytest.mark.parametrize(("checkpoint", "expected"), [("bp.pt", 0), ("dfa.pt", 1)])
def test_the_action_runs_the_audit_it_defines_and_writes_the_sarif_it_uploads(
    checkpoint: str, expected: int, tmp_path: Path
) -> None:
    step = _action_step("audit")
    inputs = {"checkpoints": f"{SAMPLES}/{checkpoint}", "data": "", "baseline": str(SAMPLES / "frozen.pt"),
              "config": "", "sarif": "true"}  # fmt: skip
    env = _fa_audit_on_path(tmp_path)
    for name, value in step["env"].items():
        env[name] = inputs[value.removeprefix("${{ inputs.").removesuffix(" }}")]
    env["GITHUB_OUTPUT"] = str(tmp_path / "github_output")
    done = subprocess.run(["bash", "-e", "-c", step["run"]], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr  # the audit's code goes to the output; the gate step exits with it
    assert (tmp_path / "github_output").read_text() == f"exit-code={expected}\n"
    assert ("::error title=fa-audit scale_stability" in done.stdout) is (expected == 1)
    log = json.loads((tmp_path / "fa-audit.sarif").read_text())
    jsonschema.Draft4Validator(SARIF_SCHEMA).validate(log)
    assert len(log["runs"][0]["results"]) == (3 if expected else 0)
    gate = _action_step("gate")
    env["FA_EXIT"] = str(expected)
    assert subprocess.run(["bash", "-c", gate["run"]], env=env).returncode == expected


def _git_repo(tmp_path: Path, files: dict[str, Path | bytes]) -> Path:
    """A git repository with ``files`` staged (copied from a path, or written)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    for name, source in files.items():
        target = repo / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source if isinstance(source, bytes) else source.read_bytes())
    subprocess.run([*git, "add", "--", *files], cwd=repo, check=True)
    return repo


@pytest.mark.skipif(shutil.which("git") is None, reason="the hook reads the staged files from git")
def test_the_pre_commit_hooks_audit_what_git_has_staged(tmp_path: Path) -> None:
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert [h["id"] for h in hooks] == ["fa-audit", "fa-audit-system"]
    assert all(h["pass_filenames"] is False and h["entry"] == "fa-audit run --staged" for h in hooks)
    env = _fa_audit_on_path(tmp_path)
    staged = {"ckpt/bp.pt": SAMPLES / "bp.pt", "ckpt/frozen.pt": SAMPLES / "frozen.pt",
              "ckpt/eval.safetensors": SAMPLES / "eval.safetensors", "README.md": b"notes\n"}  # fmt: skip
    repo = _git_repo(tmp_path, staged)
    command = [*hooks[0]["entry"].split(), "--baseline", "ckpt/frozen.pt"]  # the baseline, staged too, is left out
    done = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "ckpt/bp.pt" in done.stdout and "trajectory" not in done.stdout
    (repo / "ckpt" / "dfa.pt").write_bytes((SAMPLES / "dfa.pt").read_bytes())
    subprocess.run(["git", "add", "ckpt/dfa.pt"], cwd=repo, check=True)
    assert subprocess.run(command, cwd=repo, env=env, capture_output=True).returncode == 1


@pytest.mark.skipif(shutil.which("git") is None, reason="the hook reads the staged files from git")
def test_a_committed_file_name_never_becomes_an_option(tmp_path: Path) -> None:
    """A pull request adds evil.py and a checkpoint named --data=module:evil:f.pt: read as an option,
    fa-audit would import evil.py from the repository. The hook and the Action take file names from
    git and after "--": evil.py never runs (it would leave a marker file)."""
    evil = b"import pathlib, os\npathlib.Path('RAN').write_text('x')\nos._exit(0)\n"
    name = "--data=module:evil:f.pt"
    repo = _git_repo(
        tmp_path, {"evil.py": evil, name: SAMPLES / "dfa.pt", "eval.safetensors": SAMPLES / "eval.safetensors"}
    )
    env = _fa_audit_on_path(tmp_path)
    done = subprocess.run(["fa-audit", "run", "--staged"], cwd=repo, env=env, capture_output=True, text=True)
    assert done.returncode == 1 and not (repo / "RAN").exists(), done.stderr  # dfa.pt's own verdict
    step = _action_step("audit")
    inputs = {"checkpoints": "*.pt", "data": "", "baseline": "", "config": "", "sarif": "false"}
    for key, value in step["env"].items():
        env[key] = inputs[value.removeprefix("${{ inputs.").removesuffix(" }}")]
    env["GITHUB_OUTPUT"] = str(tmp_path / "github_output")
    subprocess.run(["bash", "-e", "-c", step["run"]], cwd=repo, env=env, capture_output=True, text=True)
    assert not (repo / "RAN").exists()
    assert (tmp_path / "github_output").read_text() == "exit-code=1\n"


def test_junit_replaces_exactly_the_characters_xml_cannot_hold() -> None:
    """XML 1.0's Char production, over every code point: tab, newline, carriage return,
    U+0020-U+D7FF, U+E000-U+FFFD and U+10000-U+10FFFF are kept, everything else becomes U+FFFD."""
    from fa_audit.formats.junit_format import _xml

    def is_char(c: int) -> bool:
        return c in (0x9, 0xA, 0xD) or 0x20 <= c <= 0xD7FF or 0xE000 <= c <= 0xFFFD or 0x10000 <= c <= 0x10FFFF

    every = "".join(map(chr, range(0x110000)))
    expected = "".join(chr(c) if is_char(c) else "\ufffd" for c in range(0x110000))
    assert _xml(every) == expected
