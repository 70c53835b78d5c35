"""The float64 loss head (pitfall 3, docs/pitfalls.md) on a network whose softmax is saturated.

A float32 softmax cannot resolve 1 - p below its epsilon, so the gradient of a
saturated sample starts from rounding noise. The sample DFA network with its head
scaled 8x saturates more than 10 % of the eval set; the audit must still match an
all-float64 computation, and a float32 loss head must visibly fail the same test.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from safetensors.torch import load_file
from torch.nn import functional as F

from fa_audit.api import audit_bundle
from fa_audit.loading import load_bundle, load_eval_data
from fa_audit.report import AuditReport
from model_adapters import get_adapter

from ..conftest import SAMPLES

HEAD_SCALE = 8.0


def _saturated_state() -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    bundle = load_bundle(SAMPLES / "dfa_penalty.pt")
    state = dict(bundle.state_dict)
    state["head.weight"] = state["head.weight"] * HEAD_SCALE
    state["head.bias"] = state["head.bias"] * HEAD_SCALE
    return state, bundle.arch_config


@pytest.fixture(scope="module")
def report() -> AuditReport:
    bundle = load_bundle(SAMPLES / "dfa_penalty.pt")
    state, _ = _saturated_state()
    saturated = dataclasses.replace(bundle, state_dict=state)
    return audit_bundle(saturated, load_eval_data(SAMPLES / "eval.safetensors"), device="cpu")


def _hidden_and_grads(dtype: torch.dtype, loss_dtype: torch.dtype) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    state, config = _saturated_state()
    model = get_adapter("resmlp").build(config).module.to(dtype)
    model.load_state_dict(state)
    data = load_file(SAMPLES / "eval.safetensors")
    logits, hidden = model(data["x"].to(dtype), return_hidden=True)
    if dtype == loss_dtype == torch.float64:  # the float64 truth, with e exact (see _exact_error)
        error = _exact_error(logits.detach(), data["y"])
        return [h.detach() for h in hidden], [g.detach() for g in torch.autograd.grad(logits, hidden, error)]
    loss = F.cross_entropy(logits.to(loss_dtype), data["y"], reduction="sum")
    return [h.detach() for h in hidden], [g.detach() for g in torch.autograd.grad(loss, hidden)]


def _exact_error(logits64: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """softmax − onehot with e_y = −Σ_{j≠y} p_j: F.cross_entropy's backward forms p_y − 1,
    which is 0 in float64 once 1 − p_y < 1.1e-16 (a margin of 37, reached here)."""
    p = logits64.softmax(-1)
    onehot = F.one_hot(y, p.shape[-1]).bool()
    rest = p.masked_fill(onehot, 0.0).sum(-1, keepdim=True)
    return torch.where(onehot, -rest, p)


def _row_cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = a.double(), b.double()
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))


def test_more_than_a_tenth_of_the_samples_are_saturated(report: AuditReport) -> None:
    assert report.measurements.saturated_fraction >= 0.10
    notes = report.check("reference_validity").notes
    assert any("saturated softmax" in n and "float32" in n for n in notes)


def test_every_layer_matches_an_all_float64_computation(report: AuditReport) -> None:
    _, grads64 = _hidden_and_grads(torch.float64, torch.float64)
    state, config = _saturated_state()
    model64 = get_adapter("resmlp").build(config).module.double()
    model64.load_state_dict(state)
    data = load_file(SAMPLES / "eval.safetensors")
    with torch.no_grad():
        logits = model64(data["x"].double())
    e = _exact_error(logits, data["y"])
    feedback = load_bundle(SAMPLES / "dfa_penalty.pt").feedback
    for layer, g in zip(report.measurements.layers, grads64, strict=True):
        # Direction is exact (cos to 1e-8, agreement to 1e-11); the magnitude keeps the float32
        # forward's rounding of the largest logit (|z| ~ 40, so ~4e-6 absolute), which scales
        # every p_j of a saturated sample by exp(dz): ~1.2e-6 relative, the model's own precision
        # (5.6e-6 where the CPU's float32 kernels round differently, as AVX-512 machines' do).
        assert layer.g_norm == pytest.approx(float(g.norm(dim=-1).quantile(0.5)), rel=1e-5)
        expected = _row_cos(e @ feedback[layer.module].double(), g).mean()
        assert layer.cos == pytest.approx(float(expected), abs=1e-6)
        assert layer.fp64_agree_min is not None and layer.fp64_agree_min >= 0.9999


def test_a_float32_loss_head_would_have_failed(report: AuditReport) -> None:
    """The old head: the float32 gradient of saturated samples is rounding noise."""
    _, grads32 = _hidden_and_grads(torch.float32, torch.float32)
    _, grads64 = _hidden_and_grads(torch.float64, torch.float64)
    for g32, g64 in zip(grads32, grads64, strict=True):
        agreement = _row_cos(g32, g64)
        assert float(agreement.min()) < 0.9  # fails fp64_agree_min >= 0.9999 by far
        assert float(agreement.mean()) < 0.999  # and the mean fails the check's threshold
