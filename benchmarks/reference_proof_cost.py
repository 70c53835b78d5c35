"""The reference proof's share of an audit: the time spent in ``prove_reference`` (float64
central differences at every h_l on 2 samples, 2 directions) against the whole audit, for
the bundled samples and the benchmark models of bench_audit.py. In-process, median of
``--repeats`` audits after one warm-up.

    python benchmarks/reference_proof_cost.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from fa_audit import api
from fa_audit.measure import run as measure_run

ROOT = Path(__file__).resolve().parents[1] / "sample_checkpoints"
CASES = ["dfa", "dfa_penalty", "fa_mlp", "small_cnn_dfa", "vit_mini_dfa"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    spent: list[float] = []
    proof = measure_run.prove_reference

    def timed(*a: Any, **k: Any) -> Any:
        start = time.perf_counter()
        try:
            return proof(*a, **k)
        finally:
            spent.append(time.perf_counter() - start)

    measure_run.prove_reference = timed  # type: ignore[assignment]
    print(f"{'checkpoint':16} {'audit s':>8} {'proof s':>8} {'share':>7}")
    for name in CASES:
        totals, proofs = [], []
        for repeat in range(args.repeats + 1):
            spent.clear()
            start = time.perf_counter()
            api.audit(ROOT / f"{name}.pt", device="cpu")
            if repeat:  # the first is a warm-up
                totals.append(time.perf_counter() - start)
                proofs.append(sum(spent))
        total, part = statistics.median(totals), statistics.median(proofs)
        print(f"{name:16} {total:8.3f} {part:8.4f} {100 * part / total:6.2f}%")


if __name__ == "__main__":
    main()
