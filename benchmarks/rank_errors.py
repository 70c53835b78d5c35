"""What the effective ranks' jackknife costs: one matrix's rank alone (its Gram matrix and one
eigenvalue problem) against the rank with its eight groups left out (:func:`effective_rank`), on
the shapes the audit meets: the first batch's 256 rows of a narrow MLP state, of BioTorch's LeNet's
and a ResNet-18's feature maps, and DFA's credit from its factors (10 classes).

    python benchmarks/rank_errors.py [--repeats 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from fa_audit.measure.diagnostics import _rank_of_gram, effective_rank, gram, product_rank

SHAPES = {
    "MLP state, 256 × 64": (256, 64),
    "MLP state, 256 × 512": (256, 512),
    "LeNet relu1, 256 × 4,704": (256, 4704),
    "LeNet relu2, 256 × 28,800 (conv, CIFAR)": (256, 28800),
    "ResNet-18 layer1, 256 × 65,536": (256, 65536),
}


def _seconds(call: Callable[[], object], repeats: int) -> float:
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    scale = torch.rand(256, generator=g, dtype=torch.float64) + 0.1
    for name, shape in SHAPES.items():
        matrix = torch.randn(shape, generator=g)
        alone = _seconds(lambda m=matrix: _rank_of_gram(gram(m, scale)), args.repeats)
        jackknifed = _seconds(lambda m=matrix: effective_rank(m, scale), args.repeats)
        extra = 1e3 * (jackknifed - alone)
        print(f"{name:>42}: rank {1e3 * alone:7.2f} ms, with its errors {1e3 * jackknifed:7.2f} ms (+{extra:.2f})")
    e, b = torch.randn(256, 10, generator=g), torch.randn(10, 4704, generator=g)
    credit = _seconds(lambda: product_rank(e, b, scale), args.repeats)
    print(f"{'DFA credit e · B, 256 × 10 · 10 × 4,704':>42}: with its errors {1e3 * credit:7.2f} ms")


if __name__ == "__main__":
    main()
