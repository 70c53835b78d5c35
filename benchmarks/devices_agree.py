"""The same audit on two devices gives the same numbers: every built-in adapter (and the
ResNet-18 case) with every built-in method, random weights and feedback (bench_audit.py's
inputs), audited on --a and on --b, per-layer numbers compared to float tolerance.

    python benchmarks/devices_agree.py [--a cpu] [--b cuda] [--samples 512] [--rel 1e-4]

Prints one line per case with the largest relative difference and which number it is in;
exits 1 when a case differs by more than --rel or in its verdict.
Run on a machine with a GPU; --b cpu checks the script itself.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

from bench_audit import CASES, METHODS, make_inputs

from fa_audit import audit
from fa_audit.report import AuditReport

ARCHS = ["resmlp", "small_cnn", "vit_mini", "resnet18_cifar"]
COMPARED = ("h_norm", "growth", "g_norm", "cos", "null_mean", "null_std", "z", "dir_stab", "fp64_agree")
NEAR_ZERO = 1e-2
"""Numbers smaller than this are compared absolutely: a z of 0.003 on one device and 0.0031
on the other agree."""


def largest_difference(a: AuditReport, b: AuditReport) -> tuple[float, str]:
    """The largest relative difference between two reports' per-layer numbers, and where."""
    worst, where = 0.0, "-"
    for i, (x, y) in enumerate(zip(a.measurements.layers, b.measurements.layers, strict=True)):
        for key in COMPARED:
            u, v = getattr(x, key), getattr(y, key)
            if u is None or v is None:
                difference = 0.0 if u is v else math.inf
            else:
                difference = abs(u - v) / max(abs(u), abs(v), NEAR_ZERO)
            if difference > worst:
                worst, where = difference, f"h{i} {key}"
    return worst, where


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", default="cpu")
    parser.add_argument("--b", default="cuda")
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--rel", type=float, default=1e-4)
    args = parser.parse_args()
    failed = 0
    for arch in ARCHS:
        case = CASES[arch]
        kw: dict[str, object] = {"hidden": case.hidden, "arch": case.arch} if case.hidden else {}
        for method in ["bp", *METHODS]:
            with tempfile.TemporaryDirectory() as tmp:
                ckpt = make_inputs(Path(tmp), [args.samples], method, arch)
                data = Path(tmp) / f"eval_{args.samples}.safetensors"
                a, b = (audit(ckpt, data=data, device=device, **kw) for device in (args.a, args.b))
            worst, where = largest_difference(a, b)
            same = a.verdict == b.verdict and worst <= args.rel
            failed += not same
            print(f"{arch:15} {method:14} {worst:9.2e} {where:16} {a.verdict.value:11} {b.verdict.value:11} "
                  f"{'ok' if same else 'DIFFERENT'}", flush=True)  # fmt: skip
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
