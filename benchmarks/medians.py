"""The medians of ‖h‖, the growth, ‖g‖ and ‖g‖/‖e‖ and their 95 % intervals, as an audit's
summary takes them from its per-sample table: four order statistics of [4 · L] rows of N values.

    python benchmarks/medians.py [--shapes 4x4096 5x32768 9x517] [--repeats 20]

One thread; the mean time of ``SampleTable.medians()`` and ``.intervals()`` together on a table of
L layers filled with N uniform values, per shape.
"""

from __future__ import annotations

import argparse
import time

import torch

from fa_audit.measure.accumulate import SampleTable


def timed(layers: int, samples: int, repeats: int) -> float:
    table = SampleTable(layers, samples)
    table.data.uniform_(generator=torch.Generator().manual_seed(0))
    table.filled = samples
    table.medians(), table.intervals()  # the ranks' cache filled, as after an audit's first summary
    start = time.perf_counter()
    for _ in range(repeats):
        table.medians(), table.intervals()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=["4x4096", "5x32768", "9x517"], help="LAYERSxSAMPLES")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for shape in args.shapes:
        layers, samples = (int(v) for v in shape.split("x"))
        print(f"{layers} layers x {samples} samples: {1e3 * timed(layers, samples, args.repeats):.2f} ms")


if __name__ == "__main__":
    main()
