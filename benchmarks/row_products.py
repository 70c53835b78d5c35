"""Row-wise <c, g> and |c|² of the cosine's terms, three ways, at the widths the audit meets: the
cache-sized blocks fa-audit uses (``functional.dot_and_square`` and ``spread_terms``), one
multiply-and-sum over the whole matrix (``linalg.vecdot``), and a contraction (``einsum``). Medians
of alternated repeats, one thread; the first column is what the audit pays.

    python benchmarks/row_products.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from fa_audit.measure.functional import dot_and_square, spread_terms

Tensor = torch.Tensor
SHAPES = [(256, 64), (256, 1024), (256, 4096), (128, 4704), (128, 28800), (256, 16384), (256, 65536)]
"""[n, D]: an MLP's and a ViT's batch, a LeNet's and a ResNet-18's conv states (the null's 128 walk samples)."""


def whole(dtype: torch.dtype) -> Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]:
    def run(c: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
        c, g = c.to(dtype), g.to(dtype)
        return torch.linalg.vecdot(c, g).double(), torch.linalg.vecdot(c, c).double()

    return run


def contraction(dtype: torch.dtype) -> Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]:
    def run(c: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
        c, g = c.to(dtype), g.to(dtype)
        return torch.einsum("nd,nd->n", c, g).double(), torch.einsum("nd,nd->n", c, c).double()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| c [n, D] | dtype | blocks (fa-audit) | whole vecdot | einsum |")
    print("| --- | --- | --- | --- | --- |")
    for n, d in SHAPES:
        c = torch.randn(n, d)
        for dtype, ours in ((torch.float64, dot_and_square), (torch.float32, spread_terms)):
            g = torch.randn(n, d, dtype=dtype)
            ways = [ours, whole(dtype), contraction(dtype)]
            times: list[list[float]] = [[] for _ in ways]
            for way in ways:
                way(c, g)  # warm-up
            for _ in range(args.repeats):
                for way, kept in zip(ways, times, strict=True):
                    start = time.perf_counter()
                    way(c, g)
                    kept.append(time.perf_counter() - start)
            ms = [f"{statistics.median(t) * 1e3:.3f} ms" for t in times]
            print(f"| [{n}, {d}] | {str(dtype).removeprefix('torch.')} | {' | '.join(ms)} |")


if __name__ == "__main__":
    main()
