"""The sample-checkpoint recipe, run at a tiny budget, writes bundles fa-audit can audit."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import jsonschema

from fa_audit.api import audit
from fa_audit.report.schema import schema

from .conftest import ROOT


def load_recipe() -> ModuleType:
    spec = importlib.util.spec_from_file_location("recipe", ROOT / "sample_checkpoints" / "recipe.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_recipe_run_writes_auditable_bundles(tmp_path: Path) -> None:
    load_recipe().main(tmp_path, scale=0.03)
    written = {p.name for p in tmp_path.iterdir()}
    expected = {
        "train.safetensors",
        "eval.safetensors",
        "bp.pt",
        "frozen.pt",
        "dfa.pt",
        "dfa_penalty.pt",
        "dfa_nofeedback.pt",
        "fa_mlp.pt",
        "dfa_ep1.pt",
        "dfa.safetensors",
        "dfa.feedback.safetensors",
    }
    assert expected <= written
    reports = {}
    for name in ("bp", "frozen", "dfa", "dfa_penalty", "dfa_nofeedback", "fa_mlp", "dfa_ep1"):
        reports[name] = audit(
            tmp_path / f"{name}.pt", baseline=tmp_path / "frozen.pt" if name not in {"fa_mlp", "frozen"} else None
        )
        jsonschema.validate(reports[name].to_dict(), schema())
    growth = {n: max(layer.growth or 0 for layer in r.measurements.layers) for n, r in reports.items()}
    assert growth["dfa"] > 10 * growth["bp"]  # even one epoch of DFA inflates the residual stream
    assert all(layer.refused for layer in reports["dfa_nofeedback"].measurements.layers)
    assert audit(tmp_path / "dfa.safetensors").measurements.layers[0].cos == reports["dfa"].measurements.layers[0].cos


def test_tiny_recipe_run_writes_auditable_regression_and_language_model_samples(tmp_path: Path) -> None:
    recipe = load_recipe()
    recipe.regression_samples(tmp_path, scale=0.03)
    recipe.lm_samples(tmp_path, scale=0.01)
    for name, head in (("regression_dfa", "mse"), ("gpt_mini_dfa", "token_cross_entropy")):
        report = audit(tmp_path / f"{name}.pt", device="cpu", max_samples=64)
        jsonschema.validate(report.to_dict(), schema())
        assert report.measurements.loss_head == head and all(la.cos is not None for la in report.measurements.layers)
