"""What computing the null on a capped subsample does to z: for each sample checkpoint,
the per-layer null std and z with the null on every eval sample and on evenly spread
subsamples of 1024, 512 and 256, each over several null seeds (the seed-to-seed spread
of z is the yardstick: K = 20 draws estimate a standard deviation to about ±16 %). The std is
the one carried to every eval sample; "on n" is the draws' spread on the subsample itself.

    python benchmarks/null_cap.py [--seeds 6] [--caps 0,1024,512,256]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from fa_audit import audit
from fa_audit.config import NullCalibration, Thresholds

SAMPLES = Path(__file__).resolve().parent.parent / "sample_checkpoints"
CASES = [
    ("dfa.pt", "eval.safetensors"),
    ("dfa_penalty.pt", "eval.safetensors"),
    ("fa_mlp.pt", "eval.safetensors"),
    ("small_cnn_dfa.pt", "images_eval.safetensors"),
    ("vit_mini_dfa.pt", "images_eval.safetensors"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--caps", default="0,1024,512,256")
    parser.add_argument("--only", help="one checkpoint of the cases, e.g. fa_mlp.pt")
    args = parser.parse_args()
    for checkpoint, data in CASES:
        if args.only and checkpoint != args.only:
            continue
        print(f"{checkpoint} (eval on {data})")
        for cap in (int(c) for c in args.caps.split(",")):
            config = Thresholds(null_calibration=NullCalibration(samples=cap, walk_samples=cap))
            reports = [
                audit(SAMPLES / checkpoint, data=SAMPLES / data, config=config, seed=s, device="cpu")
                for s in range(args.seeds)
            ]
            runs = [r.measurements.layers for r in reports]
            label = f"  null on {cap or 'all'} samples".ljust(28)
            stds = [statistics.mean(r[i].null_std or 0.0 for r in runs) for i in range(len(runs[0]))]
            zs = [[r[i].z for r in runs] for i in range(len(runs[0]))]
            print(label + "std " + " ".join(f"{s:.4f}" for s in stds))
            on_n = [statistics.mean(r[i].null_std_sample or r[i].null_std or 0.0 for r in runs) for i in range(len(zs))]
            if on_n != stds:
                print(" " * 28 + "on n " + " ".join(f"{s:.4f}" for s in on_n))
            print(" " * 28 + "z   " + " ".join(_spread(z) for z in zs))


def _spread(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    if len(known) < 2:
        return "—"
    return f"{statistics.mean(known):.2f}±{statistics.stdev(known):.2f}"


if __name__ == "__main__":
    main()
