"""More than one process: ``fa-audit run`` launched as torchrun launches it (two ranks, the
gloo backend, on the CPU) gives one process's numbers, writes and prints on rank 0 alone,
and ends every rank with the same exit code; ``audit_module`` called on every rank of an
initialised process group, each with its own batches, gives the report of all of them."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fa_audit import ExitCode, api, audit_module
from fa_audit.adapt import build_model
from fa_audit.adapt.fit_keys import fit_bundle
from fa_audit.loading import load_eval_data

from .conftest import DRAWN_AT_RANDOM, SAMPLES

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not built in")

TOLERANCE = 1e-5
"""Relative: the ranks run float32 kernels with their own thread counts."""

SKIPPED = {"settings", "inputs", "checkpoint", *DRAWN_AT_RANDOM}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _launch(
    args: list[str], cwd: Path, world: int = 2, per_rank: list[list[str]] | None = None
) -> list[subprocess.CompletedProcess[str]]:
    """``fa-audit ARGS`` in ``world`` processes with the environment torchrun gives its workers
    (``per_rank``: each rank's own ARGS)."""
    port = _free_port()
    procs = []
    for rank in range(world):
        args = per_rank[rank] if per_rank is not None else args
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(world),
               "RANK": str(rank), "LOCAL_RANK": str(rank), "OMP_NUM_THREADS": "1"}  # fmt: skip
        procs.append(subprocess.Popen([sys.executable, "-m", "fa_audit", *args], cwd=cwd, env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))  # fmt: skip
    done = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done


def assert_close(one: Any, many: Any, where: str = "") -> None:
    """Every number of two reports' JSON equal to TOLERANCE, everything else exactly."""
    if isinstance(one, dict):
        assert set(one) == set(many), where
        for key in set(one) - SKIPPED:
            assert_close(one[key], many[key], f"{where}.{key}")
    elif isinstance(one, list):
        assert len(one) == len(many), where
        for i, (a, b) in enumerate(zip(one, many, strict=True)):
            assert_close(a, b, f"{where}[{i}]")
    elif isinstance(one, float) and isinstance(many, float):
        assert many == pytest.approx(one, rel=TOLERANCE, abs=1e-12), where
    else:
        assert one == many, where


@pytest.mark.parametrize(
    ("sample", "options"),
    [
        ("dfa.pt", []),  # DFA, two layers whose null needs more draws (settled across the ranks)
        ("fa_mlp.pt", ["--batch-size", "64", "--max-samples", "1000"]),  # FA, shards of 512 and 488
        ("dfa.pt", ["--batch-size", "100", "--max-samples", "1000"]),  # one shard unit of 1600: rank 0 has none
    ],
)
def test_two_ranks_give_one_process_numbers(sample: str, options: list[str], tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    ranks = _launch(["run", str(SAMPLES / sample), "--device", "cpu", "--json", str(report), *options], tmp_path)
    max_samples = int(options[options.index("--max-samples") + 1]) if options else None
    batch_size = int(options[options.index("--batch-size") + 1]) if options else 256
    alone = api.audit(SAMPLES / sample, device="cpu", max_samples=max_samples, batch_size=batch_size)

    assert [r.returncode for r in ranks] == [alone.exit_code] * 2, [r.stderr[-500:] for r in ranks]
    written = json.loads(report.read_text())
    assert written["settings"]["world_size"] == 2 and alone.settings["world_size"] == 1
    assert written["samples"] == alone.measurements.samples
    assert_close(alone.to_dict(), written)
    assert "samples on 2 ranks)" in ranks[0].stdout and ranks[1].stdout == ranks[1].stderr == ""  # rank 0 alone prints


def test_an_error_on_one_rank_ends_every_rank_alike(tmp_path: Path) -> None:
    """Rank 1's shard holds an Inf: both ranks exit 2, and rank 0 says why."""
    from safetensors.torch import load_file, save_file

    data = load_file(SAMPLES / "eval.safetensors")
    data["x"][1500, 3] = float("inf")
    save_file(data, tmp_path / "eval.safetensors")
    ranks = _launch(["run", str(SAMPLES / "dfa.pt"), "--device", "cpu", "--data", "eval.safetensors"], tmp_path)
    assert [r.returncode for r in ranks] == [ExitCode.INPUT_ERROR] * 2
    assert "NaN or Inf (in samples 1280..1535)" in ranks[0].stderr and ranks[1].stderr == ""


def _audit_module_rank(rank: int, init: str, out: str) -> None:
    """One rank of a process group: its half of the batches, as a DistributedSampler would give it."""
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    torch.set_num_threads(1)
    try:
        module, feedback, hidden, batches = _fa_mlp()
        report = audit_module(module, batches[rank::2], method="fa", feedback=feedback, hidden=hidden,
                              batch_size=64, device="cpu")  # fmt: skip
        Path(f"{out}.{rank}").write_text(json.dumps(report.to_dict()))
    finally:
        dist.destroy_process_group()


def _fa_mlp() -> tuple[torch.nn.Module, dict[str, torch.Tensor], list[str], list[tuple[torch.Tensor, torch.Tensor]]]:
    bundle = fit_bundle(api.load(SAMPLES / "fa_mlp.pt"))
    model = build_model(bundle)
    data = load_eval_data(SAMPLES / "eval.safetensors")
    x, y = torch.as_tensor(data.x[0:768]), torch.as_tensor(data.y[0:768])
    batches = [(x[i : i + 128], y[i : i + 128]) for i in range(0, 768, 128)]
    return model.module, dict(bundle.feedback), list(model.hidden_modules), batches


def test_audit_module_on_every_rank_of_a_process_group(tmp_path: Path) -> None:
    out = tmp_path / "report"
    mp.spawn(_audit_module_rank, args=(f"file://{tmp_path / 'rendezvous'}", str(out)), nprocs=2)
    module, feedback, hidden, batches = _fa_mlp()
    # The ranks held batches 0, 2, 4 and 1, 3, 5: one process given them in that order.
    ordered = batches[0::2] + batches[1::2]
    alone = audit_module(module, ordered, method="fa", feedback=feedback, hidden=hidden, batch_size=64, device="cpu")
    reports = [json.loads(Path(f"{out}.{rank}").read_text()) for rank in range(2)]
    assert reports[0] == reports[1]  # every rank holds the merged report
    assert reports[0]["settings"]["world_size"] == 2 and reports[0]["samples"] == 768
    assert_close(alone.to_dict(), reports[0])


@pytest.mark.parametrize(
    ("rank1", "differs"),
    [
        (["run", str(SAMPLES / "dfa_penalty.pt"), "--max-samples", "512"], "files differ"),
        (["run", str(SAMPLES / "dfa.pt"), "--max-samples", "256"], "settings differ"),
    ],
)
def test_ranks_that_read_other_files_or_settings_stop_alike(rank1: list[str], differs: str, tmp_path: Path) -> None:
    """Rank 1 on dfa_penalty.pt while rank 0 audits dfa.pt gave a report of dfa.pt with mixed
    cosines; another --max-samples likewise. Every rank now ends with exit 2, rank 0 saying what differs."""
    rank0 = ["run", str(SAMPLES / "dfa.pt"), "--max-samples", "512"]
    done = _launch([], tmp_path, per_rank=[rank0, rank1])
    assert [d.returncode for d in done] == [ExitCode.INPUT_ERROR] * 2, [d.stderr for d in done]
    assert f"the ranks do not audit the same thing: rank 1's {differs} from rank 0's" in done[0].stderr


@pytest.mark.parametrize(
    ("own", "said"),
    [
        (["--config", "bad.yaml"], "bad.yaml: is not valid YAML"),
        (["--arch-config", "bad.yaml"], "bad.yaml: is not valid YAML"),
        (["--baseline", "missing.pt"], "missing.pt"),
    ],
)
def test_a_refusal_on_one_rank_alone_ends_every_rank_alike(own: list[str], said: str, tmp_path: Path) -> None:
    """A file bad or missing on one node: rank 1 used to stop alone (exit 2, saying nothing: only
    rank 0 prints) while rank 0 waited for it, then called gloo's lost connection a bug (exit 4).
    Every rank now ends with exit 2, rank 0 saying whose refusal it is."""
    (tmp_path / "bad.yaml").write_text("a: [\n")
    rank0 = ["run", str(SAMPLES / "dfa.pt"), "--max-samples", "512"]
    done = _launch([], tmp_path, per_rank=[rank0, [*rank0, *own]])
    assert [d.returncode for d in done] == [ExitCode.INPUT_ERROR] * 2, [d.stderr for d in done]
    assert "error: on rank 1: " in done[0].stderr and said in done[0].stderr and done[1].stderr == ""


def test_a_rank_that_dies_is_one_sentence_on_the_others(tmp_path: Path) -> None:
    """Rank 1 killed (memory, a signal) while rank 0 waits for it in a collective: no "bug in
    fa-audit", exit 2 and a sentence pointing at the other rank's own output."""
    (tmp_path / "dying.py").write_text(
        "import os\nimport torch\n\n\ndef batches():\n"
        "    if os.environ['RANK'] == '1':\n        os._exit(9)\n"
        "    return [(torch.randn(64, 24), torch.zeros(64, dtype=torch.long))]\n"
    )
    done = _launch(["run", str(SAMPLES / "dfa.pt"), "--data", "module:dying:batches"], tmp_path)
    assert [d.returncode for d in done] == [ExitCode.INPUT_ERROR, 9], [d.stderr for d in done]
    assert "another rank of this torchrun run stopped while this one waited for it" in done[0].stderr
    assert "bug" not in done[0].stderr


def _padded_rank(rank: int, init: str, out: str) -> None:
    """One rank's DataLoader over 767 samples under a DistributedSampler, which pads them to 768."""
    from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    torch.set_num_threads(1)
    try:
        module, feedback, hidden, batches = _fa_mlp()
        x, y = torch.cat([b[0] for b in batches])[:767], torch.cat([b[1] for b in batches])[:767]
        dataset = TensorDataset(x, y)
        loader = DataLoader(dataset, batch_size=64, sampler=DistributedSampler(dataset, shuffle=True, seed=3))
        report = audit_module(module, loader, method="fa", feedback=feedback, hidden=hidden, batch_size=64,
                              device="cpu")  # fmt: skip
        Path(f"{out}.{rank}").write_text(json.dumps(report.to_dict()))
    finally:
        dist.destroy_process_group()


def test_a_distributed_samplers_repeats_are_counted_once(tmp_path: Path) -> None:
    """767 samples on 2 ranks: the sampler gives rank 1 one of rank 0's samples again. The report
    counts 767 samples, each once: its accuracy is the 767 samples' accuracy, and it says so."""
    out = tmp_path / "report"
    mp.spawn(_padded_rank, args=(f"file://{tmp_path / 'rendezvous'}", str(out)), nprocs=2)
    reports = [json.loads(Path(f"{out}.{rank}").read_text()) for rank in range(2)]
    assert reports[0] == reports[1] and reports[0]["samples"] == 767
    assert any("repeated 1 sample" in note for note in reports[0]["notes"])
    module, _, _, batches = _fa_mlp()
    x, y = torch.cat([b[0] for b in batches])[:767], torch.cat([b[1] for b in batches])[:767]
    with torch.no_grad():
        hits = module(x.float()).argmax(1) == y
    assert reports[0]["accuracy"] == pytest.approx(float(hits.double().mean()), abs=1e-12)
