"""Output files: modes as any tool's, '-' as standard output, devices and FIFOs written
through, and never an input overwritten or half a report left behind."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from fa_audit import ExitCode, output_file
from fa_audit.output_file import write_output

from ..cli_runner import run
from ..conftest import SAMPLES


@pytest.fixture
def umask() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """dfa.pt with its eval data, copied where the test may (try to) overwrite them."""
    for name in ("dfa.pt", "eval.safetensors"):
        shutil.copy(SAMPLES / name, tmp_path / name)
    return tmp_path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_outputs_honour_the_umask(tmp_path: Path, umask: None) -> None:
    outs = {"--json": tmp_path / "r.json", "--markdown": tmp_path / "r.md", "--plot": tmp_path / "r.png"}
    code, _, _ = run("run", SAMPLES / "dfa_penalty.pt", "--quiet", *(x for kv in outs.items() for x in kv))
    assert code == ExitCode.WALK_BACK
    assert {stat.S_IMODE(p.stat().st_mode) for p in outs.values()} == {0o644}
    os.umask(0o077)
    write_output(str(tmp_path / "private.json"), b"{}")
    assert stat.S_IMODE((tmp_path / "private.json").stat().st_mode) == 0o600


def test_a_replaced_file_keeps_its_mode(tmp_path: Path, umask: None) -> None:
    target = tmp_path / "r.json"
    target.write_text("old")
    target.chmod(0o640)
    write_output(str(target), b"new")
    assert target.read_bytes() == b"new" and stat.S_IMODE(target.stat().st_mode) == 0o640


def test_markdown_dash_prints_the_report_and_creates_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, _ = run("run", SAMPLES / "dfa.pt", "--markdown", "-")
    assert code == ExitCode.WALK_BACK
    assert out.startswith("### fa-audit: `dfa.pt` — WALK BACK\n") and "per-layer measurements" not in out
    assert list(tmp_path.iterdir()) == []


def test_dash_is_refused_for_plot_and_for_two_outputs_at_once() -> None:
    code, out, err = run("run", SAMPLES / "dfa.pt", "--plot", "-")
    assert code == ExitCode.INPUT_ERROR and out == "" and "PNG" in err
    code, _, err = run("run", SAMPLES / "dfa.pt", "--json", "-", "--markdown", "-")
    assert code == ExitCode.INPUT_ERROR and "only one of" in err


def test_json_into_a_fifo_reaches_its_reader_and_the_fifo_stays(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    code, _, _ = run("run", SAMPLES / "dfa_penalty.pt", "--json", fifo, "--quiet")
    reader.join(timeout=60)
    assert code == ExitCode.WALK_BACK
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert json.loads(received[0])["verdict"] == "WALK_BACK"


def test_a_character_device_is_written_through_not_replaced() -> None:
    before = os.stat("/dev/null")
    code, _, _ = run("run", SAMPLES / "dfa_penalty.pt", "--json", "/dev/null", "--quiet")
    after = os.stat("/dev/null")
    assert code == ExitCode.WALK_BACK
    assert stat.S_ISCHR(after.st_mode) and (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)


@pytest.mark.parametrize(
    ("option", "victim"),
    [("--json", "dfa.pt"), ("--markdown", "eval.safetensors"), ("--plot", "dfa.pt"), ("--json", "./sub/../dfa.pt")],
)
def test_an_output_that_is_an_input_is_refused_and_the_input_kept(workdir: Path, option: str, victim: str) -> None:
    (workdir / "sub").mkdir()
    before = {p: digest(p) for p in workdir.iterdir() if p.is_file()}
    code, out, err = run("run", workdir / "dfa.pt", option, workdir / victim)
    assert code == ExitCode.INPUT_ERROR and out == ""
    assert "is an input of this audit" in err and len(err.strip().splitlines()) == 1
    assert {p: digest(p) for p in workdir.iterdir() if p.is_file()} == before


def test_meta_data_found_by_the_audit_is_protected_too(workdir: Path) -> None:
    """eval.safetensors is named by the checkpoint's meta.data, not on the command line."""
    before = digest(workdir / "eval.safetensors")
    code, _, err = run("run", workdir / "dfa.pt", "--markdown", workdir / "eval.safetensors")
    assert code == ExitCode.INPUT_ERROR and "is an input" in err
    assert digest(workdir / "eval.safetensors") == before


def test_summarize_never_rewrites_its_input(tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    run("run", SAMPLES / "dfa_penalty.pt", "--json", report, "--quiet")
    before = digest(report)
    code, _, err = run("summarize", report, "--json", report)
    assert code == ExitCode.INPUT_ERROR and "is an input" in err and digest(report) == before


def test_two_outputs_to_one_file_are_refused(tmp_path: Path) -> None:
    code, _, err = run("run", SAMPLES / "dfa.pt", "--json", tmp_path / "r", "--markdown", tmp_path / "r")
    assert code == ExitCode.INPUT_ERROR and "name the same file" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("target", ["", "{tmp}", "{tmp}/missing/r.json", "/proc/fa-audit-r.json"])
def test_unwritable_outputs_are_refused_before_auditing(tmp_path: Path, target: str) -> None:
    code, out, err = run("run", SAMPLES / "dfa.pt", "--json", target.format(tmp=tmp_path))
    assert code == ExitCode.INPUT_ERROR and out == "" and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "report.md"
    target.write_text("old", encoding="utf-8")

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(output_file.os, "chmod", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_output(str(target), b"half")
    assert target.read_text(encoding="utf-8") == "old"
    assert list(tmp_path.iterdir()) == [target]
