"""Language models (issue #33): gpt_mini, a causal pre-LN transformer behind a terminal
LayerNorm, trained by the recipe on 39 kB of fa-audit's own docs (bytes), audited with the
token_cross_entropy head its meta.loss names. BP gets TRUST over its frozen blocks; vanilla DFA's
residual stream explodes (scale stability fails) and the residual-stream penalty contains it;
the DFA credit per token, e_t·B_l shared by every position, gives the cosines a float64
computation written here gives; wrong token data are exit 2 with one sentence."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch.nn import functional as F

from fa_audit import ExitCode, audit
from fa_audit.adapt.fit_keys import fit_bundle
from fa_audit.api import build_model
from fa_audit.config import Perturbation, Thresholds
from fa_audit.loading import load_bundle, load_eval_data
from fa_audit.loss_heads import get_loss_head
from fa_audit.loss_heads.token_cross_entropy import IGNORE_INDEX
from fa_audit.measure.reference_check import TOLERANCE
from fa_audit.report import Status

from .cli_runner import run
from .conftest import SAMPLES

LM = {name: SAMPLES / f"gpt_mini_{name}.pt" for name in ("bp", "frozen", "dfa", "dfa_penalty")}
EVAL = SAMPLES / "lm_eval.safetensors"


def test_the_token_heads_loss_and_error_are_autograds_in_float64() -> None:
    head = get_loss_head("token_cross_entropy")
    g = torch.Generator().manual_seed(0)
    out = torch.randn(3, 5, 7, generator=g, dtype=torch.float64) * 3
    y = torch.randint(0, 7, (3, 5), generator=g)
    y[0, 1] = y[2, 4] = IGNORE_INDEX
    out[1, 2, y[1, 2]] = 80.0  # saturated: softmax − onehot cancels to 0 in float64
    leaf = out.clone().requires_grad_()
    per_sequence = torch.stack([
        F.cross_entropy(leaf[i], y[i], ignore_index=IGNORE_INDEX) for i in range(3)
    ])  # fmt: skip
    (expected,) = torch.autograd.grad(per_sequence.sum(), leaf)
    direction, scale = head.output_error(out, y)
    error = direction * scale.view(-1, 1, 1)
    saturated = torch.zeros_like(error, dtype=torch.bool)
    saturated[1, 2] = True
    assert torch.allclose(error[~saturated], expected[~saturated], rtol=1e-10, atol=1e-300)
    assert bool((error[1, 2] != 0).all()) and bool((error[0, 1] == 0).all())  # exact there; nothing where masked
    assert torch.allclose(head.per_sample_loss(out, y)[[0, 2]], per_sequence.detach()[[0, 2]], rtol=1e-12)


def _float64_dfa_cosines(samples: int) -> list[float]:
    """Γ per layer: per sequence, the DFA credit (every position's e_t·B_l) against the gradient
    of the summed per-sequence mean token loss, both flattened over [T, dim], in float64."""
    bundle = fit_bundle(load_bundle(LM["dfa"]))
    model = build_model(bundle)
    model.module.double()
    data = load_eval_data(EVAL, "tokens")
    x, y = torch.as_tensor(data.x[0:samples]).long(), torch.as_tensor(data.y[0:samples]).long()
    with torch.enable_grad():
        logits, hidden = model.forward_hidden(x)
        losses = F.cross_entropy(logits.transpose(1, 2), y, reduction="none").mean(1)
        grads = torch.autograd.grad(losses.sum(), hidden)
    e = ((logits.softmax(-1) - F.one_hot(y, logits.shape[-1])) / y.shape[1]).detach()
    out = []
    for name, grad in zip(model.hidden_modules, grads, strict=True):
        credit = (e @ bundle.feedback[name].double()).flatten(1)
        grad = grad.flatten(1)
        out.append(float(((credit * grad).sum(1) / (credit.norm(dim=1) * grad.norm(dim=1))).mean()))
    return out


def test_bp_is_trusted_and_vanilla_dfa_explodes_where_the_penalty_contains_it() -> None:
    bp = audit(LM["bp"], baseline=LM["frozen"], device="cpu")
    assert bp.verdict.value == "TRUST" and bp.measurements.loss_head == "token_cross_entropy", bp.checks
    data = load_eval_data(EVAL, "tokens")
    x, y = torch.as_tensor(data.x[0 : data.samples]).long(), torch.as_tensor(data.y[0 : data.samples]).long()
    with torch.no_grad():
        logits = build_model(fit_bundle(load_bundle(LM["bp"]))).forward_hidden(x)[0]
    assert bp.measurements.accuracy == pytest.approx(float((logits.argmax(-1) == y).double().mean()), abs=1e-9)

    dfa = audit(LM["dfa"], baseline=LM["frozen"], device="cpu")
    scale = dfa.check("scale_stability")
    assert scale.status is Status.FAIL and max(la.h_norm for la in dfa.measurements.layers) > 1e9
    assert dfa.verdict.value == "WALK_BACK"
    # Mode 1 where the protocol says it lives: the reference collapsed behind the terminal LayerNorm
    reference = dfa.check("reference_validity")
    assert reference.status is Status.FAIL and any("Mode 1" in m for m in reference.messages), reference.messages
    assert all(la.g_rel < 1e-7 for la in dfa.measurements.layers[1:])  # ‖g‖/‖e‖ ≈ 2e-8 behind ‖h‖ ≈ 7e9
    penalised = audit(LM["dfa_penalty"], baseline=LM["frozen"], device="cpu")
    assert penalised.check("scale_stability").status is Status.PASS
    assert penalised.check("reference_validity").status is Status.PASS  # the penalty contains Mode 1
    assert max(la.h_norm for la in penalised.measurements.layers) < 1e3
    deep = [la.cos for la in penalised.measurements.layers[1:]]
    assert min(deep) > max(la.cos for la in dfa.measurements.layers[2:])  # the penalty's deep credit: above vanilla's


def test_the_token_dfa_cosines_are_a_float64_computations() -> None:
    """The audit's cosines are the float32 gradient's: behind the exploded stream (‖h‖ 7e9) float32
    rounds the gradient itself (fp64 agreement 0.98 at h1 on these rows, as the report says), and
    there the float64 computation differs by at most the angle between the two gradients that the
    agreement states, √(2(1 − agreement)) (mean per-sample angles, by Jensen); elsewhere by
    float32's 2e-5."""
    report = audit(LM["dfa"], device="cpu", max_samples=64)
    truth = _float64_dfa_cosines(64)
    for layer, cos in zip(report.measurements.layers, truth, strict=True):
        assert layer.fp64_agree is not None
        tolerance = 2e-5 + math.sqrt(2 * max(0.0, 1 - layer.fp64_agree))
        assert layer.cos == pytest.approx(cos, abs=tolerance), (layer.name, layer.fp64_agree)
    # float64's own rounding of a stream of norm 7e9 leaves the proof inside its 1e-3 tolerance, typically
    # near 1e-6; relative to ⟨g, v⟩, the error has a tail (over 1e-4 at some layer in about one audit of 300)
    checks = sorted(la.grad_check for la in report.measurements.layers if la.grad_check is not None)
    assert len(checks) == len(truth) and checks[-1] <= TOLERANCE and checks[len(checks) // 2] < 1e-4, checks
    assert report.check("reference_validity").status is Status.FAIL


def test_the_dfa_run_over_steps_is_a_trajectory_of_a_growing_stream() -> None:
    paths = [SAMPLES / f"gpt_mini_dfa_step{s}.pt" for s in (100, 700)] + [LM["dfa"]]
    code, out, err = run("run", *paths, "--max-samples", "32", "--device", "cpu", "--no-color")
    assert code == ExitCode.WALK_BACK, out + err
    growth = [audit(p, device="cpu", max_samples=32).measurements.layers[-1].h_norm for p in paths]
    assert growth[0] < min(growth[1:]) and min(growth[1:]) > 1e8  # from 1e6 at step 100


NUDGED = Thresholds(perturbation=Perturbation(nudges=2048))


def test_the_protocols_two_metrics_table_comes_out_as_the_paper_has_it() -> None:
    """Vanilla DFA early, while its reference is still valid (step 100), against the penalised run
    at the end: deep Γ and deep ρ both ≈ 0 for vanilla and both well above it with the penalty,
    ρ within its error of Γ layer by layer, the negative control 0 within its error. The stream
    vanilla DFA has grown by step 100 amplifies a nudge of its embedding so much that no step
    makes the loss answer linearly there: that ρ is withheld and its positive control says why."""
    vanilla = audit(SAMPLES / "gpt_mini_dfa_step100.pt", config=NUDGED, device="cpu")
    penalised = audit(LM["dfa_penalty"], config=NUDGED, device="cpu")
    assert vanilla.check("reference_validity").status is Status.PASS  # the meaningful regime
    rows: dict[str, tuple[float, float, float]] = {}
    for name, report in (("vanilla", vanilla), ("penalised", penalised)):
        deep = report.measurements.layers[1:]
        for layer in deep:
            assert layer.perturbation_corr is not None and layer.perturbation_corr_se is not None, (name, layer.name)
            assert layer.perturbation_corr_pos is not None and layer.perturbation_corr_pos >= 0.99
            assert abs(layer.perturbation_corr - layer.cos) <= 3 * layer.perturbation_corr_se, (name, layer.name)
            assert layer.perturbation_corr_neg is not None and layer.perturbation_corr_neg_se is not None
            assert abs(layer.perturbation_corr_neg) <= 3 * layer.perturbation_corr_neg_se, (name, layer.name)
        cos = sum(la.cos or 0.0 for la in deep) / len(deep)
        rho = sum(la.perturbation_corr or 0.0 for la in deep) / len(deep)
        rows[name] = (cos, rho, max(la.perturbation_corr_se or 0.0 for la in deep))  # the mean's error at most
    (cos_v, rho_v, se_v), (cos_p, rho_p, se_p) = rows["vanilla"], rows["penalised"]
    assert abs(cos_v) < 0.05 and abs(rho_v) <= 3 * se_v  # indistinguishable from random
    assert cos_p > cos_v + 0.1 and rho_p - rho_v > 3 * math.hypot(se_v, se_p)  # small but well above noise
    embedding = vanilla.measurements.layers[0]
    assert embedding.perturbation_corr is None and embedding.perturbation_step == 1e-7
    assert embedding.perturbation_corr_pos is not None and embedding.perturbation_corr_pos < 0.99


@pytest.mark.parametrize(
    ("edit", "said"),
    [
        ("float_targets", "token targets are int64 \\[N, T\\]"),
        ("all_masked", "a sequence has every token masked"),
        ("outside", "token 300 is outside the model's vocabulary of 256"),
        ("x_outside", "x holds token 300 \\(in samples 0..7\\), outside the model's vocabulary of 256"),
        ("x_outside_first", "which the model cannot take \\(index out of range"),
        ("short", "x has shape \\[8, 64\\] but y \\[8, 60\\]: one target per input token"),
    ],
)
def test_wrong_token_data_are_one_sentence(tmp_path: Path, edit: str, said: str) -> None:
    data = load_eval_data(EVAL, "tokens")
    x, y = torch.as_tensor(data.x[0:8]).long(), torch.as_tensor(data.y[0:8]).long()
    if edit == "float_targets":
        y = y.float()
    elif edit == "short":
        y = y[:, :60].contiguous()
    elif edit == "all_masked":
        y[3] = IGNORE_INDEX
    elif edit == "outside":
        y[2, 5] = 300
    else:  # an input id no embedding row holds: in a later sample, and in the one the shapes are probed on
        x[2 if edit == "x_outside" else 0, 5] = 300
    save_file({"x": x, "y": y}, str(tmp_path / "tokens.safetensors"))
    code, out, err = run("run", LM["dfa"], "--data", tmp_path / "tokens.safetensors", "--device", "cpu")
    assert code == ExitCode.INPUT_ERROR and out == "" and len(err.strip().splitlines()) == 1, out + err
    assert re.search(said, err), err


def test_a_language_model_under_the_one_label_head_is_one_sentence() -> None:
    code, _, err = run("run", LM["bp"], "--loss", "cross_entropy", "--device", "cpu")
    assert code == ExitCode.INPUT_ERROR and "contradicts the checkpoint's meta.loss" in err


def test_the_perplexity_is_exp_of_the_mean_token_loss(tmp_path: Path) -> None:
    """Over every token of the eval set, in float64 from the model's float32 logits; printed beside
    the token accuracy and kept in the JSON's metric."""
    code, out, _ = run("run", SAMPLES / "gpt_mini_bp.pt", "--device", "cpu", "--json", tmp_path / "r.json")
    assert code == ExitCode.INCOMPLETE  # no baseline named: depth utility is not assessed
    report = json.loads((tmp_path / "r.json").read_text())
    data = load_eval_data(SAMPLES / "lm_eval.safetensors", "tokens")
    model = build_model(fit_bundle(load_bundle(SAMPLES / "gpt_mini_bp.pt")))
    x, y = torch.as_tensor(data.x[0 : data.samples]), torch.as_tensor(data.y[0 : data.samples])
    with torch.no_grad():
        logits = model.forward_hidden(x)[0].double()
    truth = float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)).exp())
    assert report["metric"]["perplexity"] == pytest.approx(truth, rel=1e-9)
    assert f"perplexity {truth:.4g}" in out
