"""The null draws on a capped, evenly spread subsample of the eval set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from fa_audit import audit
from fa_audit.config import NullCalibration, Thresholds
from fa_audit.measure.null_sample import NullSample, null_positions
from fa_audit.methods import Batch

from ..conftest import SAMPLES


def test_positions_spread_evenly_and_cover_every_class_of_a_sorted_set() -> None:
    assert null_positions(10, 4).tolist() == [0, 2, 5, 7]
    assert null_positions(10, 10) is None and null_positions(10, 0) is None and null_positions(3, 5) is None
    labels = torch.arange(10).repeat_interleave(100)  # sorted by class, 100 each
    picked = labels[null_positions(1000, 50)]
    assert torch.bincount(picked).tolist() == [5] * 10


def _batch(start: int, n: int) -> Batch:
    idx = torch.arange(start, start + n, dtype=torch.float32)
    return Batch(x=idx[:, None], y=idx.long(), error=idx[:, None].double(), grads=[idx[:, None, None]])


@pytest.mark.parametrize(("total", "cap", "batch"), [(1000, 100, 64), (1000, 0, 64), (70, 9, 16), (64, 64, 64)])
def test_chunks_hold_exactly_the_chosen_rows_about_a_batch_at_a_time(total: int, cap: int, batch: int) -> None:
    sample = NullSample(total, cap)
    starts = range(0, total, batch)
    chunks = [c for start in starts for c in sample.add(_batch(start, min(batch, total - start)), start)]
    chunks += list(sample.rest())
    rows = torch.cat([c.y for c in chunks])
    expected = null_positions(total, cap)
    assert rows.tolist() == (list(range(total)) if expected is None else expected.tolist())
    assert all(len(c.y) < 2 * batch for c in chunks)
    for c in chunks:  # every field keeps its rows together
        assert torch.equal(c.x[:, 0].long(), c.y) and torch.equal(c.grads[0][:, 0, 0].long(), c.y)


def _config(samples: int) -> Thresholds:
    """The same cap for every method (the FA family's walk_samples too)."""
    return Thresholds(null_calibration=NullCalibration(samples=samples, walk_samples=samples))


def test_the_fa_familys_null_is_capped_at_walk_samples(audited: Any) -> None:
    """Every FA draw is a backward walk over the null's samples: 128 of them by default, where a
    drawn DFA null takes 1024."""
    assert audited("fa_mlp").settings["null_samples"] == NullCalibration().walk_samples == 128
    assert audited("dfa").settings["null_samples"] == NullCalibration().samples == 1024
    assert NullCalibration(samples=0).samples_for(walks=True) == 128
    assert NullCalibration(samples=32).samples_for(walks=True) == 32
    assert NullCalibration(walk_samples=0).samples_for(walks=True) == 1024


def test_a_capped_null_is_the_null_of_those_samples_alone_carried_to_all(tmp_path: Path) -> None:
    """Capped at 512 of 4096 samples, the draws' spread on them is the null band the full audit of
    exactly those 512 samples gives (the same draws: they are made before any data is read), and
    the reported σ is that spread carried to all 4096 (:meth:`CosineSums.carried_std`): smaller."""
    data = load_file(str(SAMPLES / "eval.safetensors"))
    rows = null_positions(len(data["y"]), 512)
    assert rows is not None
    subset = tmp_path / "subset.safetensors"
    save_file({"x": data["x"][rows].contiguous(), "y": data["y"][rows].contiguous()}, str(subset))
    capped = audit(SAMPLES / "fa_mlp.pt", config=_config(512), device="cpu")
    alone = audit(SAMPLES / "fa_mlp.pt", data=subset, config=_config(0), device="cpu")
    assert capped.settings["null_samples"] == 512 and alone.settings["null_samples"] == 512
    for c, a in zip(capped.measurements.layers, alone.measurements.layers, strict=True):
        assert c.null_mean == pytest.approx(a.null_mean, rel=1e-9, abs=1e-12)
        assert a.null_std_sample is None  # on every one of its samples: nothing to carry
        assert c.null_std_sample == pytest.approx(a.null_std, rel=1e-9)
        assert c.null_std is not None and c.null_std < c.null_std_sample
    assert capped.measurements.layers[0].cos != alone.measurements.layers[0].cos  # Γ uses every sample


def test_a_cap_at_or_above_the_eval_size_is_the_full_null() -> None:
    full = audit(SAMPLES / "fa_mlp.pt", config=_config(0), device="cpu", max_samples=1024)
    same = audit(SAMPLES / "fa_mlp.pt", config=_config(1024), device="cpu", max_samples=1024)
    assert full.settings["null_samples"] == same.settings["null_samples"] == 1024
    assert [layer.z for layer in full.measurements.layers] == [layer.z for layer in same.measurements.layers]
    assert all(layer.null_std_sample is None for layer in full.measurements.layers)
