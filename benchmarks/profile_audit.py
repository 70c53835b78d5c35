"""Where the default audit spends its time: fa-audit's own stages (cProfile, cumulative)
and the torch operators underneath (torch.profiler, self CPU time).

    python benchmarks/profile_audit.py [--samples 32768] [--top 12] [--arch resmlp] [--method dfa]

Same model and data as bench_audit.py.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
from pathlib import Path

from bench_audit import make_inputs
from torch.profiler import ProfilerActivity, profile

from fa_audit import audit

STAGES = (
    "api.py:.*(audit)",
    "run.py:.*(measure|bp_pass|finite_norms|fp64_agreement|_accumulate)",
    "(dfa|fa).py:.*(alignment_terms|credit)",
    "diagnostics.py:.*(batch_diagnostics)",
    "checkpoint.py:.*(load_bundle)",
    "files.py:.*(sha256|check_zip_integrity)",
    "data.py:.*(batches)",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=32768)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--arch", default="resmlp", choices=["resmlp", "small_cnn", "vit_mini"])
    parser.add_argument("--method", default="dfa", choices=["dfa", "fa"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = make_inputs(Path(tmp), [args.samples], args.method, args.arch)
        data = Path(tmp) / f"eval_{args.samples}.safetensors"
        audit(ckpt, data=data, device="cpu", max_samples=512)  # warm-up: lazy imports, allocator

        profiler = cProfile.Profile()
        profiler.runcall(audit, ckpt, data=data, device="cpu")
        stats = pstats.Stats(profiler).sort_stats("cumulative")
        print("fa-audit stages (cumulative seconds):")
        for pattern in STAGES:
            stats.print_stats(pattern)

        with profile(activities=[ProfilerActivity.CPU]) as ops:
            audit(ckpt, data=data, device="cpu")
        print(ops.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))


if __name__ == "__main__":
    main()
