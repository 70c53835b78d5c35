"""Hostile inputs, round 2: each root cause run as a real `fa-audit` process under a
2 GB address-space limit, with a timeout that only catches hangs. Each must end in
its exit code with one line on stderr, no traceback, no raw control character and
no line that starts with `::` (a forged workflow command), and every input file
byte-identical afterwards."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import torch

from fa_audit import ExitCode
from fa_audit.api import audit
from fa_audit.report.document import dumps

from .ahead import Ahead, ahead_of
from .conftest import SAMPLES, load_sample

MEMORY_LIMIT = 2 << 30
HANG = 120  # seconds: catches a hang, not slowness
DFA = SAMPLES / "dfa.pt"
FAST = ["--max-samples", "64"]


BOUNDED = (
    "import resource, runpy; "
    f"resource.setrlimit(resource.RLIMIT_AS, ({MEMORY_LIMIT}, {MEMORY_LIMIT})); "
    "runpy.run_module('fa_audit', run_name='__main__', alter_sys=True)"
)
"""`python -m fa_audit` under the address-space limit, set by the process itself before it imports anything
of size: a preexec_fn would run Python between fork and exec, which is unsafe where the tests start processes
from threads (:mod:`.ahead`)."""


def fa_audit(
    *args: object, cwd: Path, env: dict[str, str] | None = None, **popen: object
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "GITHUB_STEP_SUMMARY"}
    environ |= {"COLUMNS": "120", "NO_COLOR": "1", "MALLOC_ARENA_MAX": "2", **(env or {})}
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-c", BOUNDED, *map(str, args)],
        cwd=cwd,
        env=environ,
        capture_output="stdout" not in popen,
        text=True,
        timeout=HANG,
        **popen,
    )


@dataclass
class Case:
    args: list[str]
    blame: str  # the file (or option) the message must name
    phrase: str
    code: int = ExitCode.INPUT_ERROR
    env: dict[str, str] = field(default_factory=dict)


def _bundle(tmp: Path, edit: Callable[[dict[str, object]], None], name: str = "ckpt.pt", **save: object) -> Path:
    bundle = load_sample("dfa")
    shutil.copy(SAMPLES / "eval.safetensors", tmp / "eval.safetensors")
    edit(bundle)
    torch.save(bundle, tmp / name, **save)  # type: ignore[arg-type]
    return tmp / name


def _text(tmp: Path, name: str, text: str) -> Path:
    (tmp / name).write_text(text)
    return tmp / name


def _rezip(tmp: Path, name: str, compression: int = zipfile.ZIP_STORED, twice: bool = False) -> Path:
    """dfa.pt rewritten by zipfile: compressed records, or one record written twice."""
    with zipfile.ZipFile(DFA) as src, zipfile.ZipFile(tmp / name, "w", compression) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
        if twice:
            first = src.infolist()[0]
            with warnings.catch_warnings():  # zipfile warns that the name is a duplicate: that is the point
                warnings.simplefilter("ignore")
                dst.writestr(first.filename, src.read(first))
    return tmp / name


def _overlapping_zip(tmp: Path) -> Path:
    """Every central-directory record claims the size of the largest: one stored
    stream counted many times over (a zip bomb without compression)."""
    raw = bytearray(DFA.read_bytes())
    with zipfile.ZipFile(DFA) as archive:
        biggest = max(archive.infolist(), key=lambda r: r.compress_size)
    offset = raw.find(b"PK\x01\x02")
    while offset != -1:
        raw[offset + 20 : offset + 28] = struct.pack("<II", biggest.compress_size, biggest.file_size)
        offset = raw.find(b"PK\x01\x02", offset + 4)
    (tmp / "overlap.pt").write_bytes(bytes(raw))
    return tmp / "overlap.pt"


@cache
def _sample_report() -> str:
    return dumps(audit(DFA, max_samples=64, device="cpu"))


def _report(tmp: Path, edit: Callable[[dict[str, Any]], object], name: str = "r.json") -> Path:
    report = json.loads(_sample_report())
    edit(report)
    (tmp / name).write_text(json.dumps(report, allow_nan=True))
    return tmp / name


def _fifo(tmp: Path, name: str) -> Path:
    os.mkfifo(tmp / name)
    return tmp / name


FORGED = "eval.safetensors\n::error title=fa-audit::forged\n::add-mask::x\x1b]0;pwned\x07\x1b[2J"

CORPUS: dict[str, Callable[[Path], Case]] = {
    # small files stay small
    "expanded tensor in a checkpoint": lambda t: Case(
        [_bundle(t, lambda b: b["state_dict"].__setitem__("blocks.0.fc1.weight", torch.zeros(1).expand(37500, 40000)))],  # type: ignore[index]
        "ckpt.pt",
        "expanded or overlapping view",
    ),
    "eval .pt declaring 10^7 samples": lambda t: Case(
        [
            DFA,
            "--data",
            _save(
                t,
                "big.pt",
                {
                    "x": torch.zeros(1, 24).expand(10**7, 24),
                    "y": torch.zeros(10**7, dtype=torch.long)[:1].expand(10**7),
                },
            ),
        ],
        "big.pt",
        "expanded or overlapping view",
    ),
    "YAML alias bomb": lambda t: Case(
        [
            DFA,
            "--config",
            _text(
                t,
                "bomb.yaml",
                "a: &a [x,x,x,x,x,x,x,x,x]\n"
                + "".join(
                    f"{c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n"
                    for p, c in zip("abcdefgh", "bcdefghi", strict=True)
                ),
            ),
        ],
        "bomb.yaml",
        "aliases",
    ),
    "arch_config far wider than the weights": lambda t: Case(
        [_bundle(t, lambda b: b["arch_config"].__setitem__("width", 6000))],  # type: ignore[index]
        "ckpt.pt",
        "shape",
    ),
    "arch_config width of 153 bits (found by tests/fuzz.py)": lambda t: Case(
        [_bundle(t, lambda b: b["arch_config"].__setitem__("width", 7 * 10**45))],  # type: ignore[index]
        "ckpt.pt",
        "153 bits",
    ),
    "100000 null draws": lambda t: Case(
        [DFA, "--config", _text(t, "t.yaml", "null_calibration: {draws: 100000}\n")], "t.yaml", "draws"
    ),
    "compressed zip records": lambda t: Case(
        [_rezip(t, "deflated.pt", zipfile.ZIP_DEFLATED)], "deflated.pt", "compressed"
    ),
    "two zip records of one name": lambda t: Case([_rezip(t, "twice.pt", twice=True)], "twice.pt", "two records"),
    "zip records claiming one stream": lambda t: Case([_overlapping_zip(t)], "overlap.pt", "overlap"),
    "/dev/zero as arch config": lambda t: Case(
        [SAMPLES / "dfa.safetensors", "--arch", "resmlp", "--arch-config", "/dev/zero"], "/dev/zero", "regular file"
    ),
    "/dev/urandom as a report": lambda t: Case(["summarize", "/dev/urandom"], "/dev/urandom", "regular file"),
    "FIFO as checkpoint": lambda t: Case([_fifo(t, "ckpt.pt")], "ckpt.pt", "regular file"),
    "FIFO as data": lambda t: Case([DFA, "--data", _fifo(t, "d.safetensors")], "d.safetensors", "regular file"),
    "FIFO as feedback": lambda t: Case(
        [SAMPLES / "dfa.safetensors", "--feedback", _fifo(t, "fb.safetensors")], "fb.safetensors", "regular file"
    ),
    "FIFO as config": lambda t: Case([DFA, "--config", _fifo(t, "c.yaml")], "c.yaml", "regular file"),
    "FIFO as report": lambda t: Case(["summarize", _fifo(t, "r.json")], "r.json", "regular file"),
    # file text never speaks to the terminal or the runner
    "forged workflow commands in meta.data": lambda t: Case(
        [_bundle(t, lambda b: b["meta"].__setitem__("data", FORGED)), "--format", "github"],  # type: ignore[index]
        "eval.safetensors",
        "is not beside it",
    ),
    "escape sequences in a state-dict key": lambda t: Case(
        [_bundle(t, lambda b: b["state_dict"].__setitem__("\x1b]8;;http://x\x07evil\x1b[6n", torch.zeros(1)))],  # type: ignore[index]
        "ckpt.pt",
        "evil",
    ),
    "escape sequences in a feedback key": lambda t: Case(
        [_bundle(t, lambda b: b["feedback"].__setitem__("\x1b[2Jblocks.9", torch.zeros(10, 64)))],  # type: ignore[index]
        "ckpt.pt",
        "blocks.9",
    ),
    "escape sequences in an arch_config key": lambda t: Case(
        [_bundle(t, lambda b: b["arch_config"].__setitem__("\x1b]0;title\x07depth2", 3))],  # type: ignore[index]
        "ckpt.pt",
        "depth2",
    ),
    "escape sequences in a file name": lambda t: Case(
        [_bundle(t, lambda b: None, name="\x1b[2J\n::warning::x.pt"), "--data", "/nonexistent.safetensors"],
        "nonexistent",
        "does not exist",
    ),
    # summarize verifies
    "report claiming TRUST over failed checks": lambda t: Case(
        ["summarize", _report(t, lambda r: r.update(verdict="TRUST", exit_code=0))], "r.json", "states TRUST"
    ),
    "empty report list": lambda t: Case(["summarize", _text(t, "r.json", "[]")], "r.json", "no report"),
    "NaN in a report": lambda t: Case(
        ["summarize", _report(t, lambda r: r["layers"][0].update(cos=float("nan")))], "r.json", "NaN"
    ),  # type: ignore[index]
    "1e400 in a report": lambda t: Case(
        ["summarize", _text(t, "r.json", '{"layers": [{"cos": 1e400}]}')], "r.json", "overflows"
    ),
    "report nested 10^5 deep": lambda t: Case(
        ["summarize", _text(t, "r.json", "[" * 100000 + "]" * 100000)], "r.json", "nests"
    ),
    # input errors are exit 2
    "non-string arch_config key": lambda t: Case(
        [_bundle(t, lambda b: b["arch_config"].__setitem__(7, 1))],
        "ckpt.pt",
        "7",  # type: ignore[index]
    ),
    "non-string state-dict key": lambda t: Case(
        [_bundle(t, lambda b: b["state_dict"].__setitem__(7, torch.zeros(1)))],
        "ckpt.pt",
        "7",  # type: ignore[index]
    ),
    "non-string feedback key": lambda t: Case(
        [_bundle(t, lambda b: b["feedback"].__setitem__(7, torch.zeros(1)))],
        "ckpt.pt",
        "7",  # type: ignore[index]
    ),
    "YAML nested 100 deep": lambda t: Case(
        [DFA, "--config", _text(t, "d.yaml", "a: " + "[" * 100 + "]" * 100)], "d.yaml", "nests"
    ),
    "threshold 1e400": lambda t: Case(
        [DFA, "--config", _text(t, "t.yaml", "scale_stability: {max_block_growth: 1e400}\n")],
        "t.yaml",
        "max_block_growth",
    ),
    "meta.epoch 2**70": lambda t: Case(
        [_bundle(t, lambda b: b["meta"].__setitem__("epoch", 2**70)), *FAST, "--json", "-"], "", "", code=1
    ),  # type: ignore[index]
    "--seed 2**70": lambda t: Case([DFA, "--seed", str(2**70)], "--seed", "2**63"),
    "--threads 100000": lambda t: Case([DFA, "--threads", "100000"], "--threads", "1024"),
    "output into a directory": lambda t: Case([DFA, "--json", t], t.name, "directory"),
    "empty output path": lambda t: Case([DFA, "--json", ""], "--json", "empty"),
    "output in a missing folder": lambda t: Case([DFA, "--markdown", t / "no" / "r.md"], "r.md", "folder"),
    "output under /proc": lambda t: Case(
        [DFA, "--json", "/proc/fa-audit.json"], "/proc/fa-audit.json", "cannot be written"
    ),
    "step summary in a missing folder": lambda t: Case(
        [DFA, "--format", "github"],
        "GITHUB_STEP_SUMMARY",
        "cannot be written",
        env={"GITHUB_STEP_SUMMARY": str(t / "no" / "s.md")},
    ),
    "module: whose import raises": lambda t: Case(
        [SAMPLES / "dfa.safetensors", "--arch", "module:" + _py(t, "raise ImportError('no gpu here')") + ":Net"],
        "usermod",
        "no gpu here",
    ),
    "module: whose import calls sys.exit(0)": lambda t: Case(
        [SAMPLES / "dfa.safetensors", "--arch", "module:" + _py(t, "import sys; sys.exit(0)") + ":Net"],
        "usermod",
        "sys.exit(0)",
    ),
    "pickle protocol 4": lambda t: Case(
        [_bundle(t, lambda b: None, pickle_protocol=4)], "ckpt.pt", "pickle protocol 4"
    ),
    # the right blame
    "float64 feedback beyond float32": lambda t: Case(
        [_bundle(t, lambda b: b["feedback"].__setitem__("blocks.0", torch.full((10, 64), 1e300, dtype=torch.float64)))],  # type: ignore[index]
        "ckpt.pt",
        "blocks.0",
    ),
    "float64 weight beyond float32": lambda t: Case(
        [
            _bundle(
                t, lambda b: b["state_dict"].__setitem__("norm.weight", torch.full((64,), 1e300, dtype=torch.float64))
            )
        ],  # type: ignore[index]
        "ckpt.pt",
        "norm.weight",
    ),
    "absolute meta.data": lambda t: Case(
        [_bundle(t, lambda b: b["meta"].__setitem__("data", "/etc/passwd"))], "ckpt.pt", "--data"
    ),  # type: ignore[index]
    "meta.data climbing out": lambda t: Case(
        [_bundle(t, lambda b: b["meta"].__setitem__("data", "../../eval.safetensors"))], "ckpt.pt", "--data"
    ),  # type: ignore[index]
    # outputs never destroy inputs
    "--json onto the checkpoint": lambda t: Case([_copy(t, DFA), "--json", t / "dfa.pt"], "dfa.pt", "input"),
    "--markdown onto the eval data": lambda t: Case(
        [DFA, "--data", _copy(t, SAMPLES / "eval.safetensors"), "--markdown", t / "eval.safetensors"],
        "eval.safetensors",
        "input",
    ),
    "summarize --json onto its input": lambda t: Case(
        ["summarize", _report(t, lambda r: None), "--json", t / "r.json"],
        "r.json",
        "input",
    ),
    "two outputs to one path": lambda t: Case([DFA, "--json", t / "o", "--markdown", t / "o"], "o", "same file"),
    "step summary onto the checkpoint": lambda t: Case(
        [_copy(t, DFA), "--format", "github"], "dfa.pt", "input", env={"GITHUB_STEP_SUMMARY": str(t / "dfa.pt")}
    ),
}


def _save(tmp: Path, name: str, obj: object) -> Path:
    torch.save(obj, tmp / name)
    return tmp / name


def _copy(tmp: Path, source: Path) -> Path:
    shutil.copy(source, tmp / source.name)
    return tmp / source.name


def _py(tmp: Path, body: str) -> str:
    (tmp / "usermod.py").write_text(body + "\n")
    return "usermod"


def _digest(paths: list[Path]) -> dict[Path, str]:
    files = [f for p in paths for f in (sorted(p.rglob("*")) if p.is_dir() else [p]) if f.is_file()]
    return {f: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def _clean(err: str) -> None:
    """No traceback, no raw control character, no line a CI runner would obey."""
    assert "Traceback" not in err
    assert not any(ch in err for ch in "\x1b\x07\r\x08"), repr(err)
    assert not any(line.lstrip().startswith("::") for line in err.splitlines()), err


class Started(NamedTuple):
    """A case as its process found it: the case, its arguments, its folder and every input's digest."""

    case: Case
    args: list[str]
    folder: Path
    before: dict[Path, str]


def _started(corpus: dict[str, Callable[[Path], Case]], command: str) -> Callable[[str, Path], Started]:
    def prepare(name: str, folder: Path) -> Started:
        case = corpus[name](folder)
        args = [str(a) for a in case.args]
        if args[0] != "summarize":
            args.insert(0, command)
        return Started(case, args, folder, _digest([folder, SAMPLES]))

    return prepare


def _run(started: Started) -> subprocess.CompletedProcess[str]:
    return fa_audit(*started.args, cwd=started.folder, env=started.case.env)


def check_bounded(started: Started, result: subprocess.CompletedProcess[str], written: set[Path]) -> None:
    """Its exit code and one sentence naming the file, nothing raw, every input byte-identical and
    no file left but ``written``."""
    case = started.case
    assert result.returncode == case.code, result.stderr
    _clean(result.stderr + result.stdout)
    if case.code == ExitCode.INPUT_ERROR:
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert case.blame in result.stderr and case.phrase in result.stderr, result.stderr
        assert result.stdout == ""
    after = _digest([started.folder, SAMPLES])
    assert {p: h for p, h in after.items() if p in started.before} == started.before  # inputs byte-identical
    assert set(after) <= set(started.before) | written  # no temporary file left


Cases = Ahead[Started, subprocess.CompletedProcess[str]]


corpus = ahead_of("test_hostile_input_in_a_bounded_process", _started(CORPUS, "run"), _run)


@pytest.mark.parametrize("name", CORPUS.keys())
def test_hostile_input_in_a_bounded_process(name: str, corpus: Cases) -> None:
    started, result = corpus.get(name)
    check_bounded(started, result, {Path(a) for a in started.args})


def test_sigterm_during_an_audit_ends_143_and_leaves_nothing(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            BOUNDED,
            "run",
            DFA,
            "--config",
            _text(tmp_path, "t.yaml", "null_calibration: {draws: 1000, samples: 0}\n"),
            "--batch-size",
            "2",  # about 20 s on a fast machine: the signal always lands mid-audit
            "--json",
            tmp_path / "r.json",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(4)  # past start-up, into the audit
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=HANG)
    assert proc.returncode == ExitCode.TERMINATED, err
    _clean(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.yaml"]


def test_sigterm_during_start_up_ends_143(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "fa_audit", "run", DFA], cwd=tmp_path, stderr=subprocess.PIPE, text=True
    )
    time.sleep(0.3)  # still importing torch
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=HANG)
    assert proc.returncode in (ExitCode.TERMINATED, -signal.SIGTERM), err  # before our handler exists, the default
    _clean(err)


def test_closed_stdout_is_an_output_error_unless_quiet(tmp_path: Path) -> None:
    run = subprocess.run(
        f"{sys.executable} -m fa_audit run {DFA} --max-samples 64 >&-",
        shell=True,
        cwd=tmp_path,
        capture_output=False,
        stderr=subprocess.PIPE,
        text=True,
        timeout=HANG,
    )
    assert run.returncode == ExitCode.INPUT_ERROR, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and "standard output" in run.stderr
    quiet = subprocess.run(
        f"{sys.executable} -m fa_audit run {DFA} --max-samples 64 --quiet >&-",
        shell=True,
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
        timeout=HANG,
    )
    assert quiet.returncode == ExitCode.WALK_BACK and quiet.stderr == ""


def test_ascii_terminal_gets_ascii_not_a_crash(tmp_path: Path) -> None:
    result = fa_audit("run", DFA, *FAST, cwd=tmp_path, env={"PYTHONIOENCODING": "ascii", "LC_ALL": "C"})
    assert result.returncode == ExitCode.WALK_BACK, result.stderr
    result.stdout.encode("ascii")
    assert "blocks.3" in result.stdout and result.stderr == ""


def test_users_module_printing_cannot_corrupt_json_on_stdout(tmp_path: Path) -> None:
    (tmp_path / "chatty.py").write_text(
        "print('hello from import')\n"
        "from model_adapters.resmlp import ResMLP\n"
        "class Net(ResMLP):\n"
        "    def __init__(self, **kw):\n"
        "        print('hello from init')\n"
        "        super().__init__(terminal_ln=True, **kw)\n"
    )
    result = fa_audit(
        "run", SAMPLES / "dfa.safetensors", "--arch", "module:chatty:Net", *FAST, "--json", "-", cwd=tmp_path
    )
    assert result.returncode == ExitCode.WALK_BACK, result.stderr
    assert json.loads(result.stdout)["verdict"] == "WALK_BACK"
    assert "hello from import" in result.stderr


def test_adapters_piped_into_head_exits_0(tmp_path: Path) -> None:
    result = subprocess.run(
        f"set -o pipefail; {sys.executable} -m fa_audit adapters | head -1",
        shell=True,
        executable="/bin/bash",
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=HANG,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "" and len(result.stdout.splitlines()) == 1
