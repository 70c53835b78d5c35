"""Whole `fa-audit run` processes on the bundled samples, what a user at a shell waits for:
import torch and all, against the plain pass (in_process.py's) as a process of its own.

    python benchmarks/processes.py [--samples dfa fa_mlp ...] [--repeats 7] [--tree DIR ...]

Each repeat runs, alternated, the plain pass and then `python -m fa_audit run SAMPLE --quiet` from
each --tree (a checkout: another commit's worktree against this one; default: this checkout),
and reports each one's median wall time and CPU time (user + system, steadier than wall time on
a shared host), and the audit's median ratio to the plain pass over the pairs.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
from pathlib import Path

import bench_audit

HERE = Path(__file__).resolve().parent
SAMPLES = HERE.parent / "sample_checkpoints"
PLAIN = (
    "import sys; sys.path.insert(0, {here!r}); from pathlib import Path; "
    "from in_process import plain_pass; plain_pass(Path({ckpt!r}))"
)


def timed(cmd: list[str], tree: Path) -> tuple[float, float]:
    """(wall, user + system) seconds of one process run from ``tree`` with its own code first."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = bench_audit.timed(cmd, cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)})
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", nargs="+", default=["dfa", "fa_mlp", "small_cnn_dfa", "vit_mini_dfa"])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--tree", type=Path, action="append", help="a checkout to run fa-audit from (repeatable)")
    args = parser.parse_args()
    trees = [t.resolve() for t in args.tree or [HERE.parent]]
    for sample in args.samples:
        ckpt = str(SAMPLES / f"{sample}.pt")
        plain_cmd = [sys.executable, "-c", PLAIN.format(here=str(HERE), ckpt=ckpt)]
        audit_cmd = [sys.executable, "-m", "fa_audit", "run", ckpt, "--quiet"]
        plain: list[tuple[float, float]] = []
        audits: dict[Path, list[tuple[float, float]]] = {t: [] for t in trees}
        for _ in range(args.repeats):
            plain.append(timed(plain_cmd, HERE.parent))
            for tree in trees:
                audits[tree].append(timed(audit_cmd, tree))
        wall, cpu = (statistics.median(p[i] for p in plain) for i in (0, 1))
        print(f"{sample:>14}: plain pass {wall:.2f} s wall, {cpu:.2f} s CPU")
        for tree, runs in audits.items():
            aw, ac = (statistics.median(r[i] for r in runs) for i in (0, 1))
            ratio = statistics.median(r[0] / p[0] for r, p in zip(runs, plain, strict=False))
            print(f"{'':>16}{tree}: audit {aw:.2f} s wall, {ac:.2f} s CPU; {ratio:.2f}× the plain pass (wall, pairs)")


if __name__ == "__main__":
    main()
