"""The bundled samples' default audits as the golden file of tests/test_unchanged.py: run
with the commit before the speed work on the path,

    git worktree add /tmp/base dada7f6
    PYTHONPATH=/tmp/base python tests/data/dump_golden.py > tests/data/golden-dada7f6.json
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from fa_audit import audit

SAMPLES = ["bp", "dfa", "dfa_penalty", "fa_mlp", "small_cnn_dfa", "vit_mini_dfa", "frozen"]
KEPT = ("samples", "accuracy", "saturated_fraction", "verdict", "exit_code")
LAYER_KEPT = ("h_norm", "growth", "g_norm", "cos", "null_mean", "null_std", "z", "z_interval", "dir_stab",
              "fp64_agree", "fp64_agree_min", "credit_rank", "bp_rank", "weight_angle_deg", "weight_ratio")  # fmt: skip
ROOT = Path(__file__).resolve().parents[2] / "sample_checkpoints"


def main() -> None:
    torch.set_num_threads(2)
    out = {}
    for name in SAMPLES:
        report = audit(ROOT / f"{name}.pt").to_dict()
        out[name] = {k: report[k] for k in KEPT}
        out[name]["checks"] = [check["status"] for check in report["checks"]]
        out[name]["layers"] = [{k: layer[k] for k in LAYER_KEPT} for layer in report["layers"]]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
