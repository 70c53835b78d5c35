"""Hostile inputs, round 3: the fitted baseline's cache. A cache holds work, not verdicts:
a forged, planted or oversized entry, or one in a directory others can write to, leaves
the honest verdict (dfa_penalty.pt: exit 1, its baseline fitted again), no file written
through a link, and the audit within its memory bound. Real processes, as in
test_hostile_processes.py."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from fa_audit import ExitCode
from fa_audit.checks.frozen_baseline import _code_digest

from .conftest import SAMPLES, user_module
from .test_hostile_processes import _clean, _digest, fa_audit

PENALTY = SAMPLES / "dfa_penalty.pt"
FIT = ["--fit-baseline", "--train-data", SAMPLES / "train.safetensors", "--max-samples", "512"]


def _audit(tmp: Path, cache: Path) -> tuple[int, dict[str, object], str]:
    """dfa_penalty.pt with a baseline fitted for one epoch (what is at stake is which entry
    is read, not the fit; the budget is part of the cache key, the same in every run here)."""
    out, config = tmp / "r.json", tmp / "one_epoch.yaml"
    config.write_text("depth_utility: {baseline: {epochs: 1}}\n")
    result = fa_audit("run", PENALTY, *FIT, "--config", config, "--cache-dir", cache, "--json", out, "--quiet", cwd=tmp)
    _clean(result.stderr)
    report = json.loads(out.read_text()) if out.exists() else {}
    out.unlink(missing_ok=True)
    return result.returncode, report, result.stderr


@pytest.fixture(scope="module")
def honest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, object]]]:
    """A cache with one true entry, and the honest report that wrote it."""
    tmp = tmp_path_factory.mktemp("honest")
    cache = tmp / "cache"
    code, report, err = _audit(tmp, cache)
    assert code == ExitCode.WALK_BACK, err
    assert report["baseline"]["source"] == "fitted"  # type: ignore[index]
    assert oct(cache.stat().st_mode & 0o777) == "0o700"
    yield next(cache.glob("*.safetensors")), report


def _attack(tmp: Path, entry: Path, plant: object) -> tuple[Path, Path]:
    """A private copy of the cache with ``plant`` (bytes, or a callable of the entry's path)
    at the entry's name."""
    cache = tmp / "cache"
    cache.mkdir(mode=0o700)
    target = cache / entry.name
    if callable(plant):
        plant(target)
    else:
        target.write_bytes(plant)  # type: ignore[arg-type]
    return cache, target


def _assert_honest(report: dict[str, object], honest: dict[str, object], code: int) -> None:
    assert code == ExitCode.WALK_BACK
    assert report["baseline_accuracy"] == honest["baseline_accuracy"]
    assert [c["status"] for c in report["checks"]] == [c["status"] for c in honest["checks"]]  # type: ignore[union-attr, index]


def test_a_forged_accuracy_is_never_read(honest: tuple[Path, dict[str, object]], tmp_path: Path) -> None:
    entry, report = honest
    cache, _ = _attack(tmp_path, entry, json.dumps({"accuracy": 0}).encode())
    (cache / f"{entry.stem}.json").write_text(json.dumps({"accuracy": "0"}))  # the old format, at its name
    code, forged, _ = _audit(tmp_path, cache)
    _assert_honest(forged, report, code)
    assert forged["baseline"]["source"] == "fitted"  # type: ignore[index]
    assert any("not a safetensors file" in n for n in forged["notes"])  # type: ignore[union-attr]


def test_planted_weights_in_a_directory_others_can_write_are_not_used(
    honest: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    """Zeroed interface weights would make the baseline chance (a free depth margin): the
    directory is world-writable, so nothing in it is read or written."""
    entry, report = honest

    def zeroed(target: Path) -> None:
        save_file({k: torch.zeros_like(v) for k, v in load_file(entry).items()}, target, {"key": entry.stem})

    cache, target = _attack(tmp_path, entry, zeroed)
    cache.chmod(0o777)
    before = target.read_bytes()
    code, forged, _ = _audit(tmp_path, cache)
    _assert_honest(forged, report, code)
    assert target.read_bytes() == before and sorted(p.name for p in cache.iterdir()) == [entry.name]
    assert any("others can write to it (mode 777)" in n for n in forged["notes"])  # type: ignore[union-attr]


def test_a_trusted_entry_is_evaluated_and_named_with_its_hash(
    honest: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    """In the user's own directory the weights are believed, but the accuracy is measured
    here: zeroed weights give chance, not whatever number a file could state."""
    entry, report = honest
    cache, target = _attack(tmp_path, entry, entry.read_bytes())
    code, again, _ = _audit(tmp_path, cache)
    _assert_honest(again, report, code)
    assert again["baseline"]["source"] == "cache"  # type: ignore[index]
    read = {i["path"]: i["sha256"] for i in again["inputs"]}  # type: ignore[attr-defined]
    assert read[str(target)] == hashlib.sha256(entry.read_bytes()).hexdigest()


def test_a_link_at_the_entry_is_not_followed(honest: tuple[Path, dict[str, object]], tmp_path: Path) -> None:
    entry, report = honest
    victim = tmp_path / "victim.pt"
    shutil.copy(PENALTY, victim)
    cache, target = _attack(tmp_path, entry, lambda t: t.symlink_to(victim))
    before = _digest([victim, SAMPLES])
    code, again, _ = _audit(tmp_path, cache)
    _assert_honest(again, report, code)
    assert _digest([victim, SAMPLES]) == before  # the link was replaced, its target never written
    assert target.is_file() and not target.is_symlink() and load_file(target).keys() == load_file(entry).keys()
    assert not list(cache.glob("*.tmp")) and not list(cache.glob(".*"))


def test_a_4_gb_entry_is_not_read(honest: tuple[Path, dict[str, object]], tmp_path: Path) -> None:
    entry, report = honest

    def sparse(target: Path) -> None:
        with target.open("wb") as fh:
            fh.truncate(4 << 30)

    cache, _ = _attack(tmp_path, entry, sparse)
    code, again, _ = _audit(tmp_path, cache)  # under the 2 GB address-space limit
    _assert_honest(again, report, code)
    assert any("more than its weights need" in n for n in again["notes"])  # type: ignore[union-attr]


def test_the_key_covers_a_module_architectures_code(tmp_path: Path) -> None:
    """A changed model file is another architecture: its fit is not reused."""
    user_module(tmp_path, "netcode", "from model_adapters.resmlp import *\n")
    first = _code_digest("module:netcode:ResMLP")
    user_module(tmp_path, "netcode", "from model_adapters.resmlp import *\nWIDTH = 2\n")
    assert first is not None and _code_digest("module:netcode:ResMLP") not in (None, first)
    assert _code_digest("resmlp") is None  # a built-in changes with the fa-audit version in the key
    sys.modules.pop("netcode", None)
