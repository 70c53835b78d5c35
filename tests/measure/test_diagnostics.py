"""The diagnostics beside the cosine: closed-form answers, then the samples."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
import torch

from fa_audit.adapt import build_model
from fa_audit.adapt.fit_keys import fit_bundle
from fa_audit.api import data_path_for
from fa_audit.config import Perturbation, Thresholds
from fa_audit.loading import load_bundle, load_eval_data
from fa_audit.measure.diagnostics import (
    EffectiveRank,
    clustered_pearson,
    effective_rank,
    gram,
    injectors,
    nudged_losses,
    product_rank,
    unused_feedback,
    weight_geometry,
)
from fa_audit.measure.loss_head import per_sample_loss
from fa_audit.measure.run import forward_backward
from fa_audit.report import AuditReport
from model_adapters import AdaptedModel, get_adapter

from ..conftest import SAMPLES

Tensor = torch.Tensor


def _value(rank: EffectiveRank | None) -> float:
    assert rank is not None
    return rank.value


def test_effective_rank_of_an_identity_is_its_size_and_of_a_rank_one_matrix_is_one() -> None:
    assert _value(effective_rank(torch.eye(17))) == pytest.approx(17.0, rel=1e-12)
    u, v = torch.randn(40, 1), torch.randn(1, 30)
    assert _value(effective_rank(u @ v)) == pytest.approx(1.0, abs=1e-5)  # float32 rounding leaves tiny singular values
    assert effective_rank(torch.zeros(4, 4)) is None


@pytest.mark.parametrize("shape", [(5, 9000), (9000, 5)])
def test_a_gram_of_scaled_rows_is_the_gram_of_the_rows_scaled_first(shape: tuple[int, int]) -> None:
    """Each chunk scaled as it is made float64 gives the Gram of the whole matrix scaled in float64
    first (to float64's rounding: the products see other memory layouts), wide or tall and over
    several chunks, and a float64 matrix is left as it was."""
    generator = torch.Generator().manual_seed(0)
    matrix = torch.randn(shape, generator=generator, dtype=torch.float64)
    scale = torch.rand(shape[0], generator=generator, dtype=torch.float64) * 1e3
    before = matrix.clone()
    assert torch.allclose(gram(matrix, scale), gram(matrix * scale.view(-1, 1)), rtol=1e-13, atol=0)
    assert torch.equal(matrix, before)
    scaled = _value(effective_rank(matrix.float().double() * scale.view(-1, 1)))
    assert _value(effective_rank(matrix.float(), scale)) == pytest.approx(scaled, rel=1e-13)


def _svd_rank(matrix: Tensor) -> float:
    """The effective rank from float64 singular values directly (no Gram matrix)."""
    s = torch.linalg.svdvals(matrix.double())
    p = s / s.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


@pytest.mark.parametrize(("rows", "classes", "width"), [(256, 10, 4704), (256, 10, 6), (7, 10, 300), (256, 1, 64)])
def test_the_rank_of_a_product_from_its_factors_is_the_products(rows: int, classes: int, width: int) -> None:
    """DFA's credit e · B: from the rows' QR, a C × C Gram matrix, against the singular values of the
    whole [n, D] product in float64 (scaled rows; fewer rows than classes; one class)."""
    generator = torch.Generator().manual_seed(1)
    e = torch.randn(rows, classes, generator=generator, dtype=torch.float64)
    b = torch.randn(classes, width, generator=generator, dtype=torch.float64)
    scale = torch.rand(rows, generator=generator, dtype=torch.float64) + 0.1
    expected = _svd_rank((e * scale.view(-1, 1)) @ b)
    assert _value(product_rank(e.float(), b.float(), scale)) == pytest.approx(
        _svd_rank((e.float().double() * scale.view(-1, 1)) @ b.float().double()), rel=1e-9
    )
    assert _value(product_rank(e, b, scale)) == pytest.approx(expected, rel=1e-9)
    assert product_rank(e * float("nan"), b, scale) is None


@pytest.mark.parametrize("name", ["dfa", "small_cnn_dfa"])
def test_a_dfa_credits_rank_is_that_of_e_times_b(name: str, audited: Callable[..., AuditReport]) -> None:
    """The audit's credit_rank, from the factors, against the float64 SVD of the first 256 rows' credit
    e · B at their true size (what the effective rank of the whole [256, D] credit gives)."""
    report = audited(name)
    bundle = fit_bundle(load_bundle(SAMPLES / f"{name}.pt"))
    model = build_model(bundle)
    data = load_eval_data(data_path_for(bundle, None), "labels")
    x, y = torch.as_tensor(data.x[:256]).float(), torch.as_tensor(data.y[:256]).long()
    logits, _, _ = forward_backward(model, x, y)
    error = torch.softmax(logits.double(), -1) - torch.nn.functional.one_hot(y, logits.shape[-1]).double()
    for layer, module in zip(report.measurements.layers, model.hidden_modules, strict=True):
        credit = error @ bundle.feedback[module].double()
        assert layer.credit_rank == pytest.approx(_svd_rank(credit), rel=1e-6), layer.name


def test_weight_angle_of_b_equal_to_w_is_zero_and_of_minus_w_is_180() -> None:
    model = get_adapter("mlp").build({"in_dim": 6, "width": 5, "depth": 2, "num_classes": 3}, seed=0)
    weights = {n: m.weight.detach() for n, m in model.module.named_modules() if isinstance(m, torch.nn.Linear)}
    same = weight_geometry(model, weights)
    assert all(angle == pytest.approx(0.0, abs=1e-5) and ratio == pytest.approx(1.0) for angle, ratio, _ in same)
    flipped = weight_geometry(model, {n: -2 * w for n, w in weights.items()})
    assert all(angle == pytest.approx(180.0, abs=1e-5) and ratio == pytest.approx(2.0) for angle, ratio, _ in flipped)


def test_the_first_layers_b_is_never_used_so_it_gets_no_angle() -> None:
    """B of the layer that makes h0 only carries the error to the input: no credit at any h_l
    goes through it, so its angle with W would be a number about nothing."""
    model = get_adapter("mlp").build({"in_dim": 6, "width": 5, "depth": 3, "num_classes": 3}, seed=0)
    assert unused_feedback(model, torch.randn(2, 6)) == {"layers.0"}
    weights = {n: m.weight.detach() for n, m in model.module.named_modules() if isinstance(m, torch.nn.Linear)}
    angles = weight_geometry(model, weights, {"layers.0"})
    assert angles[0] == (None, None, True) and all(unused is False for *_, unused in angles[1:])


def test_pearson_of_a_line_is_one_and_of_an_orthogonal_signal_is_zero() -> None:
    t = torch.linspace(-1, 1, 100).view(10, 10)
    r, se = clustered_pearson(t, 3 * t + 2)
    assert r == pytest.approx(1.0) and se == pytest.approx(0.0, abs=1e-6)
    assert clustered_pearson(t, t**2)[0] == pytest.approx(0.0, abs=1e-8)  # symmetric: orthogonal to the line
    assert clustered_pearson(t, torch.ones(10, 10)) == (None, None)


def test_the_jackknife_error_of_a_correlation_covers_sample_to_sample_spread() -> None:
    """Per-sample slopes of random sign: the points within a sample correlate, the samples
    do not. Over 400 such draws the jackknife error matches the spread of r (a per-point
    formula, 1/√n, would be three times too small here)."""
    g = torch.Generator().manual_seed(0)
    found, errors = [], []
    for _ in range(400):
        a = torch.randn(20, 32, generator=g, dtype=torch.float64)
        b = a * torch.randn(1, 32, generator=g, dtype=torch.float64) + 0.5 * torch.randn(20, 32, generator=g)
        r, se = clustered_pearson(a, b)
        assert r is not None and se is not None
        found.append(r)
        errors.append(se)
    spread, typical = torch.tensor(found).std().item(), torch.tensor(errors).median().item()
    assert 0.8 < typical / spread < 1.25
    assert typical > 2.5 / (20 * 32) ** 0.5


NUDGED = Thresholds(perturbation=Perturbation(nudges=2048))


def test_perturbation_of_the_exact_gradient_predicts_the_loss_change(audited: Callable[..., AuditReport]) -> None:
    """BP's credit is the gradient: its perturbation correlation is the positive control's, ≈ 1,
    and the negative control (a random vector) is 0 within its stated error."""
    for layer in audited("bp", max_samples=512, config=NUDGED).measurements.layers:
        assert layer.perturbation_corr == pytest.approx(1.0, abs=1e-4)
        assert layer.perturbation_corr_pos == pytest.approx(1.0, abs=1e-4)
        assert layer.perturbation_corr_se is not None and layer.perturbation_corr_se <= 0.03
        assert layer.perturbation_corr_neg_se is not None
        assert abs(layer.perturbation_corr_neg or 0) < 3 * layer.perturbation_corr_neg_se
        assert layer.rank_ratio == pytest.approx(1.0)


def test_no_perturbation_correlation_is_reported_without_its_error(audited: Callable[..., AuditReport]) -> None:
    """Off by default; with too few nudges for perturbation.max_se, only the error is reported."""
    assert all(layer.perturbation_corr is None for layer in audited("dfa", max_samples=512).measurements.layers)
    few = Thresholds(perturbation=Perturbation(nudges=128))
    for layer in audited("dfa_penalty", max_samples=512, config=few).measurements.layers:
        assert layer.perturbation_corr is None and layer.perturbation_corr_neg is None
        assert layer.perturbation_corr_se is not None and layer.perturbation_corr_se > 0.03


@pytest.mark.parametrize("name", ["dfa_penalty", "dfa_ep1", "fa_mlp"])
def test_the_two_metrics_agree_layer_by_layer(audited: Callable[..., AuditReport], name: str) -> None:
    """The protocol's triangulation: the loss change that nudges actually cause, read against
    the credit (ρ), and the cosine with the autograd gradient (Γ) are two computations of one
    thing; each layer's ρ lies within 3 standard errors of its Γ, high layers and null ones alike."""
    layers = audited(name, config=NUDGED).measurements.layers
    for layer in layers:
        assert layer.perturbation_corr is not None and layer.perturbation_corr_se is not None and layer.cos is not None
        assert abs(layer.perturbation_corr - layer.cos) <= 3 * layer.perturbation_corr_se, layer.name
    assert max(layer.cos or 0 for layer in layers) > 0.3  # the check has something to agree on


class _SkipAround(torch.nn.Module):
    """h = inner(x) is a hidden state, but the head also reads x: a skip around h."""

    def __init__(self) -> None:
        super().__init__()
        self.inner, self.head = torch.nn.Linear(4, 4), torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(torch.tanh(self.inner(x)) + x)
        return out


DIRECTIONS = 8


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
    repeated = per_sample_loss(logits, y.repeat(DIRECTIONS))
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
