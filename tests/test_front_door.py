"""What a new user meets first: a sample checkpoint copied alone (from a wheel, a download)
names the eval data it misses and how to give another."""

from __future__ import annotations

import shutil
from pathlib import Path

from fa_audit import ExitCode

from .cli_runner import run
from .conftest import SAMPLES


def test_a_checkpoint_without_its_eval_data_says_what_is_missing(tmp_path: Path) -> None:
    shutil.copy(SAMPLES / "dfa.pt", tmp_path / "dfa.pt")
    code, out, err = run("run", tmp_path / "dfa.pt")
    assert code == ExitCode.INPUT_ERROR and out == "" and len(err.strip().splitlines()) == 1
    assert "the eval data its meta.data names, 'eval.safetensors', is not beside it; pass --data FILE" in err
    code, _, _ = run("run", tmp_path / "dfa.pt", "--data", SAMPLES / "eval.safetensors", "--max-samples", "256")
    assert code == ExitCode.WALK_BACK
