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

from bench_audit import CASES, make_inputs
from torch.profiler import ProfilerActivity, profile

from fa_audit import audit

STAGES = (
    "api.py:.*(audit)",
    "run.py:.*(measure|bp_pass|finite_norms|fp64_agreement|_accumulate)",
    "(dfa|fa).py:.*(alignment_terms|credit)",
    "diagnostics.py:.*(batch_diagnostics)",
    "reference_check.py:.*(prove_reference)",
    "adapt.py:.*(build_model|skeleton_state|order_hidden|probe)",
    "checkpoint.py:.*(load_bundle)",
    "files.py:.*(sha256|check_zip_integrity)",
    "data.py:.*(batches)",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=32768)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--arch", default="resmlp", choices=list(CASES))
    parser.add_argument("--method", default="dfa", choices=["dfa", "fa"])
    parser.add_argument("--max-samples", type=int, default=512, help="of the warm-up audit")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = make_inputs(Path(tmp), [args.samples], args.method, args.arch)
        data = Path(tmp) / f"eval_{args.samples}.safetensors"
        case = CASES[args.arch]
        kw: dict[str, object] = {"hidden": case.hidden, "arch": case.arch} if case.hidden else {}
        if case.state_alone:
            kw.update(arch_config=case.config, method=args.method)
        audit(ckpt, data=data, device="cpu", max_samples=args.max_samples, **kw)  # warm-up: lazy imports, allocator

        profiler = cProfile.Profile()
        profiler.runcall(audit, ckpt, data=data, device="cpu", **kw)
        stats = pstats.Stats(profiler).sort_stats("cumulative")
        print("fa-audit stages (cumulative seconds):")
        for pattern in STAGES:
            stats.print_stats(pattern)

        with profile(activities=[ProfilerActivity.CPU]) as ops:
            audit(ckpt, data=data, device="cpu", **kw)
        print(ops.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))


if __name__ == "__main__":
    main()
