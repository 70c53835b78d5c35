"""The diagnostics beside the cosine: closed-form answers, then the samples."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
import torch

from fa_audit.measure.diagnostics import (
    DIRECTIONS,
    effective_rank,
    injectors,
    nudged_losses,
    pearson,
    weight_geometry,
)
from fa_audit.report import AuditReport
from model_adapters import AdaptedModel, get_adapter


def test_effective_rank_of_an_identity_is_its_size_and_of_a_rank_one_matrix_is_one() -> None:
    assert effective_rank(torch.eye(17)) == pytest.approx(17.0, rel=1e-12)
    u, v = torch.randn(40, 1), torch.randn(1, 30)
    assert effective_rank(u @ v) == pytest.approx(1.0, abs=1e-5)  # float32 rounding leaves tiny singular values
    assert effective_rank(torch.zeros(4, 4)) is None


def test_weight_angle_of_b_equal_to_w_is_zero_and_of_minus_w_is_180() -> None:
    model = get_adapter("mlp").build({"in_dim": 6, "width": 5, "depth": 2, "num_classes": 3}, seed=0)
    weights = {n: m.weight.detach() for n, m in model.module.named_modules() if isinstance(m, torch.nn.Linear)}
    same = weight_geometry(model, weights)
    assert all(angle == pytest.approx(0.0, abs=1e-5) and ratio == pytest.approx(1.0) for angle, ratio in same)
    flipped = weight_geometry(model, {n: -2 * w for n, w in weights.items()})
    assert all(angle == pytest.approx(180.0, abs=1e-5) and ratio == pytest.approx(2.0) for angle, ratio in flipped)


def test_pearson_of_a_line_is_one_and_of_an_orthogonal_signal_is_zero() -> None:
    t = torch.linspace(-1, 1, 101)
    assert pearson(t, 3 * t + 2) == pytest.approx(1.0)
    assert pearson(t, t**2) == pytest.approx(0.0, abs=1e-8)  # symmetric: orthogonal to the line
    assert pearson(t, torch.ones(101)) is None


def test_perturbation_of_the_exact_gradient_predicts_the_loss_change(audited: Callable[..., AuditReport]) -> None:
    """BP's credit is the gradient: its perturbation correlation is the positive control's, ≈ 1."""
    for layer in audited("bp", max_samples=512).measurements.layers:
        assert layer.perturbation_corr == pytest.approx(1.0, abs=1e-4)
        assert layer.perturbation_corr_pos == pytest.approx(1.0, abs=1e-4)
        assert abs(layer.perturbation_corr_neg or 0) < 0.6  # 32 random directions: noise of ±0.18
        assert layer.rank_ratio == pytest.approx(1.0)


def test_fa_sample_has_a_partly_aligned_b_and_dfa_a_credit_of_class_rank(audited: Callable[..., AuditReport]) -> None:
    fa = audited("fa_mlp", max_samples=512).measurements.layers
    assert all(0 < (layer.weight_angle_deg or 0) < 90 for layer in fa)  # B and W have aligned a little
    assert fa[-1].weight_angle_deg < fa[0].weight_angle_deg  # type: ignore[operator]
    dfa = audited("dfa_penalty", max_samples=512).measurements.layers
    assert all((layer.credit_rank or 99) < 10 for layer in dfa)  # e · B has rank at most the number of classes
    assert all(layer.weight_angle_deg is None for layer in dfa)


class _SkipAround(torch.nn.Module):
    """h = inner(x) is a hidden state, but the head also reads x: a skip around h."""

    def __init__(self) -> None:
        super().__init__()
        self.inner, self.head = torch.nn.Linear(4, 4), torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(torch.tanh(self.inner(x)) + x)
        return out


def _nudged_both_ways(model: AdaptedModel, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss per nudge with the pass widened at h_0, and with the samples repeated from the input."""
    model = replace(model, module=model.module.double())
    x = torch.randn(m, *_input_shape(model), dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = torch.arange(m) % 3
    with torch.no_grad():
        h = model.forward_hidden(x)[1][0]
    delta = 1e-3 * torch.randn(DIRECTIONS, *h.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    inject = injectors(model, x)[0]
    widened = nudged_losses(model, inject, delta, x, y)
    with torch.no_grad(), inject(delta.flatten(0, 1)):
        logits = model.forward_hidden(x.repeat(DIRECTIONS, *[1] * (x.dim() - 1)))[0]
    repeated = torch.nn.functional.cross_entropy(logits, y.repeat(DIRECTIONS), reduction="none")
    return widened, repeated.view(DIRECTIONS, m)


def _input_shape(model: AdaptedModel) -> tuple[int, ...]:
    return (4,) if isinstance(model.module, _SkipAround) else (6,)


@pytest.mark.parametrize("m", [1, 2, 5])
def test_nudges_widened_at_the_hidden_state_equal_nudges_repeated_from_the_input(m: int) -> None:
    mlp = get_adapter("mlp").build({"in_dim": 6, "width": 5, "depth": 2, "num_classes": 3}, seed=0)
    skip = AdaptedModel(_SkipAround(), hidden_modules=("inner",), deep_prefixes=(), hooked=True)
    for model in (mlp, skip):  # the skip cannot be widened: it falls back to repeating the input
        widened, repeated = _nudged_both_ways(model, m)
        assert torch.allclose(widened, repeated, rtol=1e-13, atol=1e-13)
