"""The command line through typer's runner: every exit code, refusal, JSON, config."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import torch

from fa_audit import ExitCode, api
from fa_audit.report.schema import schema

from .cli_runner import run
from .conftest import SAMPLES


def test_trusted_checkpoint_exits_0() -> None:
    code, out, _ = run("run", SAMPLES / "bp.pt", "--baseline", SAMPLES / "frozen.pt", "--no-color")
    assert code == ExitCode.TRUST
    assert "TRUST" in out and "PASS" in out


def test_walked_back_checkpoint_exits_1_and_names_layer_value_threshold() -> None:
    code, out, _ = run("run", SAMPLES / "dfa.pt", "--no-color")
    assert code == ExitCode.WALK_BACK
    assert "WALK BACK" in out
    said = " ".join(out.split())
    assert "Mode 1 (reference collapse): the BP gradient per unit of output error is h1 (blocks.0) 1.75e-08" in said
    assert "< 1e-07" in said


def test_missing_baseline_is_incomplete_not_trusted_exit_3() -> None:
    code, out, _ = run("run", SAMPLES / "bp.pt", "--no-color")
    assert code == ExitCode.INCOMPLETE
    assert "NOT ASSESSED" in out and "--baseline" in out


def test_refused_cosines_alone_give_exit_3(tmp_path: Path) -> None:
    lenient = tmp_path / "lenient.yaml"
    lenient.write_text(
        "scale_stability: {max_block_growth: 1.0e9}\nreference_validity: {min_relative_grad_norm: 1.0e-12}\n"
    )
    code, out, _ = run("run", SAMPLES / "dfa_nofeedback.pt", "--config", lenient, "--no-color")
    assert code == ExitCode.INCOMPLETE
    assert out.count("refused") >= 5 and "feedback missing for blocks.3" in out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["run", "nope.pt"], "does not exist"),
        (["run", SAMPLES / "bp.pt", "--config", SAMPLES / "eval.safetensors"], "is not UTF-8 text"),
        (["run", SAMPLES / "bp.pt", "--device", "tpu"], "unknown device"),
        (["run", SAMPLES / "dfa.pt", "--feedback", SAMPLES / "bp.pt"], "feedback"),
        (["run", SAMPLES / "fa_mlp.pt", "--baseline", SAMPLES / "frozen.pt"], "not architecture-matched"),
        (["run", SAMPLES / "bp.pt", "--arch", "transformer9000"], "unknown architecture"),
        (["run", SAMPLES / "bp.pt", "--threads", "0"], "--threads must be from 1 to 1024"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_no_traceback(args: list[object], needle: str) -> None:
    code, out, err = run(*map(str, args))
    assert code == ExitCode.INPUT_ERROR
    assert needle in err
    assert "Traceback" not in err + out and len(err.strip().splitlines()) == 1


def test_unsafe_pickle_is_refused_and_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (Path.touch, (str(marker),))  # type: ignore[return-value]

    bad = tmp_path / "evil.pt"
    torch.save({"fa_audit_format": 1, "payload": Evil()}, bad)
    before = bad.read_bytes()
    code, _, err = run("run", bad)
    assert code == ExitCode.INPUT_ERROR and "refuses" in err
    assert not marker.exists() and bad.read_bytes() == before


def test_internal_bug_exits_4_never_1(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("simulated bug")

    monkeypatch.setattr(api, "audit", broken)
    code, _, err = run("run", SAMPLES / "bp.pt")
    assert code == ExitCode.INTERNAL_ERROR
    assert "bug in fa-audit" in err and "Traceback" not in err


def test_ctrl_c_exits_130(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "audit", interrupted)
    code, _, err = run("run", SAMPLES / "bp.pt")
    assert code == ExitCode.INTERRUPTED and "Traceback" not in err


def test_json_to_stdout_is_valid_against_the_shipped_schema() -> None:
    code, out, _ = run("run", SAMPLES / "dfa_nofeedback.pt", "--json", "-")
    assert code == ExitCode.WALK_BACK
    report = json.loads(out)  # stdout holds the JSON and nothing else
    jsonschema.validate(report, schema())
    assert report["exit_code"] == 1 and report["verdict"] == "WALK_BACK"
    assert all(layer["cos"] is None and layer["refused"] for layer in report["layers"])


def test_json_file_is_written_and_table_still_printed(tmp_path: Path) -> None:
    out_file = tmp_path / "report.json"
    code, out, _ = run("run", SAMPLES / "dfa_penalty.pt", "--baseline", SAMPLES / "frozen.pt", "--json", out_file)
    assert code == ExitCode.WALK_BACK and "per-layer" in out
    report = json.loads(out_file.read_text())
    jsonschema.validate(report, schema())
    checks = {c["name"]: c["status"] for c in report["checks"]}
    assert checks == {"scale_stability": "pass", "reference_validity": "pass", "depth_utility": "fail"}
    assert [p["path"] for p in report["inputs"]][-1].endswith("frozen.pt")
    assert list(tmp_path.iterdir()) == [out_file]  # no temporary file left behind


def test_quiet_prints_nothing_and_exit_code_tells() -> None:
    code, out, err = run("run", SAMPLES / "dfa.pt", "--quiet")
    assert code == ExitCode.WALK_BACK and out == "" and err == ""


def test_threads_sets_torch_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", asked.append)
    code, _, _ = run("run", SAMPLES / "dfa.pt", "--quiet", "--threads", "3", "--max-samples", "256")
    assert code == ExitCode.WALK_BACK and asked == [3]


def test_config_prints_effective_yaml(tmp_path: Path) -> None:
    custom = tmp_path / "t.yaml"
    custom.write_text("depth_utility: {min_margin_pp: 5}\n")
    code, out, _ = run("config", "--config", custom)
    assert code == 0 and "min_margin_pp: 5.0" in out and "max_block_growth: 50.0" in out


def test_adapters_lists_adapters_and_methods() -> None:
    code, out, _ = run("adapters")
    assert code == 0
    for name in ("resmlp", "mlp", "module:pkg.mod:Class", "bp", "dfa", "fa", "frozen"):
        assert name in out


def test_help_does_not_import_torch() -> None:
    probe = "import sys; import fa_audit, fa_audit.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    help_text = run("--help")[1]
    assert all(command in help_text for command in ("run", "compare", "summarize", "adapters", "config"))


def test_a_run_imports_neither_yaml_nor_xml_unless_asked_for(tmp_path: Path) -> None:
    """#35: a run imports what it uses; YAML only for --config (or the ``config`` command), XML only for --junit."""
    probe = (
        "import sys; from fa_audit.__main__ import main; sys.argv = ['fa-audit', *sys.argv[1:]]\n"
        "try:\n    main()\nexcept SystemExit as end:\n"
        "    print(end.code, 'yaml' in sys.modules, 'xml.etree' in sys.modules)"
    )
    audit = ["run", str(SAMPLES / "fa_mlp.pt"), "--json", str(tmp_path / "out.json")]
    done = subprocess.run([sys.executable, "-c", probe, *audit], capture_output=True, text=True, check=True)
    assert done.stdout.split()[-3:] == [str(int(ExitCode.INCOMPLETE)), "False", "False"], (done.stdout, done.stderr)
    assert json.loads((tmp_path / "out.json").read_text())["layers"]


def test_the_program_freezes_torch_after_importing_it_and_leaves_the_collector_as_it_found_it() -> None:
    """``fa-audit run`` imports torch with the cyclic collector paused and freezes what the import
    made (three full scans of it during the import and one at exit, 0.5-0.7 s of a run); the
    collector is on again for the audit, and stays off where the caller had turned it off."""
    probe = (
        "import gc, sys; from fa_audit.cli.runtime import load_torch; was = sys.argv[1] == 'on'; "
        "gc.enable() if was else gc.disable(); load_torch(); frozen = gc.get_freeze_count(); load_torch(); "
        "print('torch' in sys.modules, 'fa_audit.api' in sys.modules, frozen > 100_000, "
        "gc.get_freeze_count() == frozen, gc.isenabled() == was)"
    )
    for state in ("on", "off"):
        done = subprocess.run([sys.executable, "-c", probe, state], capture_output=True, text=True, check=True)
        assert done.stdout.split() == ["True"] * 5, (state, done.stdout, done.stderr)
