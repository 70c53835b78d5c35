"""The audit against a plain forward and backward pass over the same data, inside one process:
what an audit costs a training loop or a notebook, with no `import torch` in either number.

    python benchmarks/in_process.py [--samples dfa fa_mlp ...] [--repeats 7] [--threads 1] [--slope] [--out FILE]

Each repeat times the plain pass (the model built from the checkpoint, the eval data in batches of
256, gradients at every hidden state from the float64 loss) and then the audit (`fa_audit.audit`,
default settings), alternated so that a slow minute of a shared host hits both; the ratio is the
median of the per-pair ratios, with their range. One thread by default (the work, not the thread
pool); `--threads 0` keeps torch's default. `--slope` also times both on the first half of each
eval set and fits time = fixed + per-sample cost: the audit's cost per batch against the plain
pass's (the ratio a large eval set tends to) and what it pays once beyond the plain pass.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from bench_audit import _slope
from torch.nn import functional as F

from fa_audit import audit
from fa_audit.adapt import build_model
from fa_audit.adapt.fit_keys import fit_bundle
from fa_audit.api import data_path_for
from fa_audit.loading import load_bundle, load_eval_data

SAMPLES = Path(__file__).resolve().parents[1] / "sample_checkpoints"
CASES = ["dfa", "fa_mlp", "small_cnn_dfa", "vit_mini_dfa", "gpt_mini_dfa"]


def plain_pass(path: Path, samples: int | None = None) -> float:
    """Seconds for one forward and backward over the checkpoint's eval data (its first ``samples``),
    batches of 256, the checkpoint and the data read as the audit reads them (both pay for loading)."""
    start = time.perf_counter()
    bundle = fit_bundle(load_bundle(path))
    model = build_model(bundle)
    tokens = bundle.meta.get("loss") == "token_cross_entropy"
    data = load_eval_data(data_path_for(bundle, None), "tokens" if tokens else "labels")
    end = min(data.samples, samples or data.samples)
    for first in range(0, end, 256):
        last = min(first + 256, end)
        x = torch.as_tensor(data.x[first:last])
        y = torch.as_tensor(data.y[first:last]).long()
        logits, hidden = model.forward_hidden(x if not x.is_floating_point() else x.float())
        logits = logits.double()
        loss = (
            F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum")
            if logits.dim() == 3
            else F.cross_entropy(logits, y, reduction="sum")
        )
        torch.autograd.grad(loss, hidden)
    return time.perf_counter() - start


def _eval_samples(path: Path) -> int:
    bundle = load_bundle(path)
    tokens = bundle.meta.get("loss") == "token_cross_entropy"
    return load_eval_data(data_path_for(bundle, None), "tokens" if tokens else "labels").samples


def timed_audit(path: Path, samples: int | None = None) -> float:
    start = time.perf_counter()
    audit(path, device="cpu", max_samples=samples)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", nargs="+", default=CASES)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="0: torch's default")
    parser.add_argument("--slope", action="store_true", help="also time both on half the eval set, and fit")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = {}
    for name in args.samples:
        path = SAMPLES / f"{name}.pt"
        plain_pass(path), timed_audit(path)  # warm: first calls import and allocate
        half = (_eval_samples(path) // 2) if args.slope else None
        pairs, small = [], []
        for _ in range(args.repeats):
            pairs.append((plain_pass(path), timed_audit(path)))
            if half:
                small.append((plain_pass(path, half), timed_audit(path, half)))
        ratios = [a / p for p, a in pairs]
        rows[name] = {
            "plain_s": statistics.median(p for p, _ in pairs),
            "audit_s": statistics.median(a for _, a in pairs),
            "ratio": statistics.median(ratios),
            "ratio_range": [min(ratios), max(ratios)],
        }
        row = rows[name]
        line = (
            f"{name:>14}: audit {row['audit_s']:.3f} s / plain {row['plain_s']:.3f} s = {row['ratio']:.2f}× "
            f"(pairs {min(ratios):.2f}–{max(ratios):.2f})"
        )
        if half:
            full = _eval_samples(path)
            row.update(_slope([p for p, _ in pairs], [a for _, a in pairs], small, full, half), half_samples=half)
            line += f"; per batch {row['per_batch_ratio']:.2f}×, fixed {1e3 * row['fixed_over_plain_s']:.0f} ms"
        print(line, flush=True)
    if args.out:
        args.out.write_text(
            json.dumps({"threads": torch.get_num_threads(), "repeats": args.repeats, "rows": rows}, indent=1)
        )


if __name__ == "__main__":
    main()
