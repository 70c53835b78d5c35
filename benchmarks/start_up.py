"""What fa-audit imports after torch, in fresh processes: the part of a run's start-up that is
fa-audit's own (the command line, the audit, the report and the output formats).

    python benchmarks/start_up.py [--repeats 20] [--tree DIR ...]

Each repeat starts one process per --tree (a checkout: another commit's worktree against this
one; default: this checkout), alternated, that imports torch and then times the import of the
modules a `fa-audit run` loads before it audits; the median and least of each tree's times, and
the modules some trees load and others do not (a format's or the config's dependency).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROBE = (
    "import json, sys, time, torch; before = set(sys.modules); start = time.perf_counter(); "
    "import fa_audit.api, fa_audit.cli, fa_audit.cli.views, fa_audit.formats; "
    "print(json.dumps([time.perf_counter() - start, sorted(set(sys.modules) - before)]))"
)


def imported(tree: Path) -> tuple[float, set[str]]:
    """Seconds to import the modules of a run after torch, and the modules that made, from ``tree``."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # a user's modules are compiled once, not at every start
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=tree, env=env, capture_output=True, text=True, check=True)
    seconds, modules = json.loads(out.stdout)
    return seconds, set(modules)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--tree", type=Path, action="append", help="a checkout to import fa-audit from (repeatable)")
    args = parser.parse_args()
    trees = [t.resolve() for t in args.tree or [HERE.parent]]
    for tree in trees:
        imported(tree)  # bytecode written before the first timing
    times: dict[Path, list[float]] = {t: [] for t in trees}
    modules: dict[Path, set[str]] = {}
    for _ in range(args.repeats):
        for tree in trees:
            seconds, modules[tree] = imported(tree)
            times[tree].append(seconds)
    everywhere = set.intersection(*modules.values())
    for tree, seconds in times.items():
        only = sorted(m for m in modules[tree] - everywhere if "." not in m)
        print(f"{tree}: median {1e3 * statistics.median(seconds):.1f} ms, least {1e3 * min(seconds):.1f} ms"
              + (f"; also imports {', '.join(only)}" if only else ""))  # fmt: skip


if __name__ == "__main__":
    main()
