"""Hostile and broken inputs, built on the fly: each one must end in exit 2 with at most
four lines on stderr naming the file, no traceback, no command run, and every input
file byte-identical afterwards."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from fa_audit import ExitCode
from fa_audit.cli import app

from .conftest import SAMPLES, load_sample

MARKER = "fa_audit_pwned"


class RunsCommand:
    """Unpickling this runs a shell command."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {MARKER}",))


@dataclass
class Stranger:
    payload: int = 1


def _pt(tmp: Path, name: str, obj: object) -> Path:
    torch.save(obj, tmp / name)
    return tmp / name


def _bytes(tmp: Path, name: str, content: bytes) -> Path:
    (tmp / name).write_bytes(content)
    return tmp / name


def _multi_disk_zip(tmp: Path) -> Path:
    """A .pt whose ZIP64 end-of-central-directory locator claims a second disk (found by tests/fuzz.py)."""
    raw = bytearray(Path(DFA).read_bytes())
    locator = raw.rfind(b"PK\x06\x07")
    raw[locator + 4 : locator + 8] = (1).to_bytes(4, "little")
    return _bytes(tmp, "disks.pt", bytes(raw))


def _encrypted_zip(tmp: Path) -> Path:
    """A .pt whose first record claims to be encrypted (found by tests/fuzz.py)."""
    raw = bytearray(Path(DFA).read_bytes())
    raw[6] |= 1  # general-purpose flag bit 0 of the first local header
    central = raw.find(b"PK\x01\x02")
    raw[central + 8] |= 1  # and of its central-directory entry
    return _bytes(tmp, "locked.pt", bytes(raw))


def _safetensors_raw(tmp: Path, name: str, header: bytes, data: bytes = b"") -> Path:
    return _bytes(tmp, name, struct.pack("<Q", len(header)) + header + data)


def _bundle(tmp: Path, edit: Callable[[dict[str, object]], None], name: str = "ckpt.pt") -> Path:
    bundle = load_sample("dfa")
    shutil.copy(SAMPLES / "eval.safetensors", tmp / "eval.safetensors")  # meta.data stays inside the folder
    edit(bundle)
    return _pt(tmp, name, bundle)


def _data(tmp: Path, tensors: dict[str, torch.Tensor], name: str = "data.safetensors") -> Path:
    save_file(tensors, tmp / name)
    return tmp / name


def _eval(**replace: torch.Tensor) -> dict[str, torch.Tensor]:
    data = load_file(SAMPLES / "eval.safetensors")
    data.update(replace)
    return {k: v for k, v in data.items() if v.numel() or k in replace}


def _yaml(tmp: Path, text: str) -> Path:
    return _bytes(tmp, "t.yaml", text.encode())


def _set_nan(b: dict[str, object]) -> None:
    b["state_dict"]["blocks.1.fc1.weight"][0, 0] = float("nan")  # type: ignore[index]


def _set_feedback(key: str, value: torch.Tensor) -> Callable[[dict[str, object]], None]:
    return lambda b: b["feedback"].__setitem__(key, value)  # type: ignore[attr-defined]


DFA = str(SAMPLES / "dfa.pt")
BP = str(SAMPLES / "bp.pt")
rng = random.Random(0)

# Each case: tmp folder -> (CLI arguments, the file the message must name, a phrase it must contain).
Case = Callable[[Path], tuple[list[str], str, str]]
CORPUS: dict[str, Case] = {
    "pickle that runs a command": lambda t: (
        [str(_pt(t, "evil.pt", {"x": RunsCommand()}))],
        "evil.pt",
        "imports posix.system",
    ),
    "custom class": lambda t: ([str(_pt(t, "cls.pt", {"fa_audit_format": 1, "s": Stranger()}))], "cls.pt", "refuses"),
    "zero-byte pt": lambda t: ([str(_bytes(t, "empty.pt", b""))], "empty.pt", "empty"),
    "zero-byte safetensors": lambda t: ([str(_bytes(t, "e.safetensors", b""))], "e.safetensors", "empty"),
    "truncated pt": lambda t: (
        [str(_bytes(t, "half.pt", Path(DFA).read_bytes()[:150_000]))],
        "half.pt",
        "truncated or corrupt",
    ),
    "zip record flagged encrypted": lambda t: ([str(_encrypted_zip(t))], "locked.pt", "truncated or corrupt"),
    "random bytes pt": lambda t: (
        [str(_bytes(t, "noise.pt", rng.randbytes(4096)))],
        "noise.pt",
        "truncated or corrupt",
    ),
    "random bytes safetensors": lambda t: (
        [str(_bytes(t, "noise.safetensors", rng.randbytes(4096)))],
        "noise.safetensors",
        "not a valid safetensors",
    ),
    "header claims 2^60 bytes": lambda t: (
        [str(_bytes(t, "huge.safetensors", struct.pack("<Q", 2**60) + b"{}"))],
        "huge.safetensors",
        "too large",
    ),
    "header not JSON": lambda t: (
        [str(_safetensors_raw(t, "nj.safetensors", b"not json at all"))],
        "nj.safetensors",
        "invalid JSON",
    ),
    "overlapping tensors": lambda t: (
        [
            str(
                _safetensors_raw(
                    t,
                    "ov.safetensors",
                    json.dumps(
                        {
                            "model.a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                            "model.b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
                        }
                    ).encode(),
                    bytes(12),
                )
            )
        ],
        "ov.safetensors",
        "invalid offset",
    ),
    "NaN in a weight": lambda t: ([str(_bundle(t, _set_nan))], "ckpt.pt", "contains NaN or Inf"),
    "Inf in eval data": lambda t: (
        [DFA, "--data", str(_data(t, _eval(x=torch.full((8, 24), float("inf")), y=torch.zeros(8, dtype=torch.long))))],
        "data.safetensors",
        "NaN or Inf",
    ),
    "feedback of the wrong shape": lambda t: (
        [str(_bundle(t, _set_feedback("blocks.0", torch.zeros(10, 63))))],
        "ckpt.pt",
        "has shape [10, 63]",
    ),
    "feedback of the wrong dtype": lambda t: (
        [str(_bundle(t, _set_feedback("embed", torch.zeros(10, 64, dtype=torch.long))))],
        "ckpt.pt",
        "dtype",
    ),
    "extra feedback key": lambda t: (
        [str(_bundle(t, _set_feedback("blocks.9", torch.zeros(10, 64))))],
        "ckpt.pt",
        "blocks.9",
    ),
    "unknown architecture": lambda t: (
        [str(_bundle(t, lambda b: b.__setitem__("arch", "gpt5")))],
        "ckpt.pt",
        "unknown architecture",
    ),
    "arch_config does not match the weights": lambda t: (
        [str(_bundle(t, lambda b: b["arch_config"].__setitem__("depth", 3)))],
        "ckpt.pt",
        "blocks.3",
    ),  # type: ignore[index]
    "missing state-dict key": lambda t: (
        [str(_bundle(t, lambda b: b["state_dict"].pop("norm.weight")))],
        "ckpt.pt",
        "lacks norm.weight",
    ),  # type: ignore[attr-defined]
    "unexpected state-dict key": lambda t: (
        [str(_bundle(t, lambda b: b["state_dict"].__setitem__("rogue", torch.zeros(1))))],
        "ckpt.pt",
        "rogue",
    ),  # type: ignore[index]
    "inputs that overflow the model": lambda t: (
        [DFA, "--data", str(_data(t, {"x": torch.full((4, 24), 3e38), "y": torch.zeros(4, dtype=torch.long)}))],
        "data.safetensors",
        "overflow the model",
    ),
    "label out of range": lambda t: (
        [DFA, "--data", str(_data(t, {"x": torch.zeros(4, 24), "y": torch.tensor([0, 1, 2, 99])}))],
        "data.safetensors",
        "label 99",
    ),
    "float labels": lambda t: (
        [DFA, "--data", str(_data(t, {"x": torch.zeros(4, 24), "y": torch.zeros(4)}))],
        "data.safetensors",
        "integers",
    ),
    "x of the wrong width": lambda t: (
        [DFA, "--data", str(_data(t, {"x": torch.zeros(4, 25), "y": torch.zeros(4, dtype=torch.long)}))],
        "data.safetensors",
        "per-sample shape [25]",
    ),
    "zero samples": lambda t: (
        [DFA, "--data", str(_data(t, {"x": torch.zeros(0, 24), "y": torch.zeros(0, dtype=torch.long)}))],
        "data.safetensors",
        "zero samples",
    ),
    "data without y": lambda t: (
        [DFA, "--data", str(_data(t, {"x": torch.zeros(4, 24)}))],
        "data.safetensors",
        "has no 'y'",
    ),
    "YAML syntax error": lambda t: ([BP, "--config", str(_yaml(t, "a: [1,\n"))], "t.yaml", "not valid YAML"),
    "YAML unknown key": lambda t: (
        [BP, "--config", str(_yaml(t, "depth_utility: {margin: 1}\n"))],
        "t.yaml",
        "depth_utility.margin",
    ),
    "YAML wrong type": lambda t: (
        [BP, "--config", str(_yaml(t, "null_calibration: {draws: many}\n"))],
        "t.yaml",
        "null_calibration.draws",
    ),
    "YAML negative threshold": lambda t: (
        [BP, "--config", str(_yaml(t, "scale_stability: {max_block_growth: -1}\n"))],
        "t.yaml",
        "max_block_growth",
    ),
    "directory as checkpoint": lambda t: ([str(t)], t.name, "is a directory"),
    "directory as data": lambda t: ([DFA, "--data", str(t)], t.name, "is a directory"),
    "unknown extension": lambda t: ([str(_bytes(t, "model.h5", b"HDF"))], "model.h5", "unknown extension"),
    "meta.data points nowhere": lambda t: (
        [str(_bundle(t, lambda b: b["meta"].__setitem__("data", "gone.safetensors")))],
        "gone.safetensors",
        "is not beside it; pass --data FILE",
    ),  # type: ignore[index]
    "meta.train_data names the folder": lambda t: (
        [str(_bundle(t, lambda b: b["meta"].__setitem__("train_data", ""))), "--fit-baseline", "--no-cache"],
        "ckpt.pt",
        "meta.train_data '' names a folder, not a file; pass --train-data FILE",
    ),  # type: ignore[index]  (the fuzzer's find: IsADirectoryError, exit 4)
    "corrupt sidecar feedback": lambda t: (
        [str(_bundle(t, lambda b: None, name="run.pt")), "--feedback", str(_bytes(t, "fb.safetensors", b"\x07" * 64))],
        "fb.safetensors",
        "not a valid safetensors",
    ),
}


def _digest(paths: list[Path]) -> dict[Path, str]:
    files = [f for p in paths for f in (sorted(p.rglob("*")) if p.is_dir() else [p]) if f.is_file()]
    return {f: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


@pytest.mark.parametrize("case", CORPUS.keys())
def test_hostile_input_exits_2_cleanly(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    args, names, phrase = CORPUS[case](tmp_path)
    before = _digest([tmp_path, SAMPLES])
    result = CliRunner().invoke(app, ["run", *args])
    err = result.stderr
    assert result.exit_code == ExitCode.INPUT_ERROR, err
    assert 1 <= len(err.strip().splitlines()) <= 4
    assert names in err and phrase in err
    assert "Traceback" not in err + result.stdout
    assert not (tmp_path / MARKER).exists()  # the pickle's command never ran
    assert _digest([tmp_path, SAMPLES]) == before  # nothing touched, nothing left behind


def test_zip_claiming_several_disks_audits_as_the_original_or_is_refused(tmp_path: Path) -> None:
    """Python 3.11's zipfile rejects the locator; later ones ignore it, as torch does.
    Either way, never a wrong number and never a traceback."""
    data = ["--data", str(SAMPLES / "eval.safetensors"), "--max-samples", "512", "--json", "-"]
    result = CliRunner().invoke(app, ["run", str(_multi_disk_zip(tmp_path)), *data])
    if result.exit_code == ExitCode.INPUT_ERROR:
        assert "disks.pt" in result.stderr and "truncated or corrupt" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        return
    original = CliRunner().invoke(app, ["run", DFA, *data])
    layers = [json.loads(r.stdout)["layers"] for r in (result, original)]
    assert [la["cos"] for la in layers[0]] == [la["cos"] for la in layers[1]]


def test_unreadable_file_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "locked.pt"
    target.write_bytes(Path(BP).read_bytes())
    real_open = Path.open

    def guarded_open(self: Path, *args: object, **kwargs: object) -> object:
        if self == target:
            raise PermissionError(13, "Permission denied")
        return real_open(self, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(Path, "open", guarded_open)  # root ignores chmod 000, so simulate it
    result = CliRunner().invoke(app, ["run", str(target)])
    assert result.exit_code == ExitCode.INPUT_ERROR
    assert "locked.pt" in result.stderr and "Permission denied" in result.stderr


def test_old_torch_is_refused_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch, "__version__", "2.9.1+cpu")
    result = CliRunner().invoke(app, ["run", BP])
    assert result.exit_code == ExitCode.INPUT_ERROR
    assert "2.9.1" in result.stderr and "weights_only" in result.stderr
