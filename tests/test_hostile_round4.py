"""Round 4 of hostile inputs: what a file may not set for itself."""

from __future__ import annotations

from pathlib import Path

import fa_audit
from fa_audit import ExitCode
from fa_audit.loading import load_bundle

from .cli_runner import run
from .conftest import SAMPLES

FAST = "depth_utility: {baseline: {epochs: 1}}\n"


def test_the_fitted_baseline_budget_is_never_the_files(tmp_path: Path) -> None:
    """frozen.pt relabelled bp, with meta.epochs 0 (and a learning rate of 0): its fitted baseline
    was left untrained (0.09) and the file got TRUST. The budget is the tool's (the config's):
    the baseline trains, the margin is that of a frozen net over its own kind, and a note says so."""
    frozen = load_bundle(SAMPLES / "frozen.pt")
    model = fa_audit.api.build_model(frozen).module
    meta = {**frozen.meta, "data": "eval.safetensors", "train_data": "train.safetensors", "epochs": 0, "lr": 0.0}
    for name in ("eval.safetensors", "train.safetensors"):
        (tmp_path / name).write_bytes((SAMPLES / name).read_bytes())
    fa_audit.save_bundle(tmp_path / "forged.pt", model, arch=frozen.arch, arch_config=frozen.arch_config,
                         method="bp", meta=meta)  # fmt: skip
    (tmp_path / "fast.yaml").write_text(FAST)
    code, out, err = run("run", tmp_path / "forged.pt", "--fit-baseline", "--no-cache", "--config",
                         tmp_path / "fast.yaml", "--max-samples", "1024", "--no-color")  # fmt: skip
    assert code != ExitCode.TRUST, out + err
    said = " ".join(out.split())
    assert "meta names training settings (epochs, lr), which the fitted baseline does not take" in said
