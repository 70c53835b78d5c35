"""DFA's and DRTP's null band in closed form (fa_audit/measure/null_closed.py): the σ it reports
brackets the exact double sum over every pair of null samples, Gaussian draws of B agree with
it, and the audit's z no longer depends on the null's seed."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from fa_audit.adapt import build_model
from fa_audit.adapt.fit_keys import fit_bundle
from fa_audit.api import data_path_for
from fa_audit.loading import load_bundle, load_eval_data
from fa_audit.loss_heads.cross_entropy import CROSS_ENTROPY
from fa_audit.measure.null_closed import ClosedNull, add_rows, first_order
from fa_audit.measure.null_sample import null_positions
from fa_audit.measure.run import forward_backward
from fa_audit.report import AuditReport

from .conftest import SAMPLES

Tensor = torch.Tensor


def _null_rows(name: str, rows: int = 1024) -> tuple[Tensor, Tensor, list[Tensor]]:
    """``rows`` samples of a bundled sample, spread evenly (0: all of them): labels, output error,
    flattened gradients. 1,024 keep the exact double sum over every pair of rows affordable."""
    bundle = fit_bundle(load_bundle(SAMPLES / f"{name}.pt"))
    model = build_model(bundle)
    data = load_eval_data(data_path_for(bundle, None), "labels")
    x, y = torch.as_tensor(data.x[0 : data.samples]), torch.as_tensor(data.y[0 : data.samples]).long()
    picked = null_positions(len(y), rows)
    if picked is not None:
        x, y = x[picked], y[picked]
    logits, _, grads = forward_backward(model, x.float(), y)
    error, _ = CROSS_ENTROPY.output_error(logits, y)
    return y, error, [g.flatten(1) for g in grads]


def _units(rows: Tensor) -> Tensor:
    return rows / rows.norm(dim=1, keepdim=True)


def _h(rho: Tensor, width: int) -> Tensor:
    """h_D(ρ) by its hypergeometric series, summed until the terms vanish."""
    total, term, square = torch.ones_like(rho), torch.ones_like(rho), rho * rho
    for k in range(100_000):
        term = term * (0.5 + k) ** 2 / ((width / 2 + 1 + k) * (k + 1)) * square
        total += term
        if float(term.max()) < 1e-18:
            break
    return first_order(width) * rho * total


def _exact_std(signal: Tensor, grad: Tensor) -> float:
    """σ from the double sum over every pair of rows, float64."""
    r, g = _units(signal.double()), _units(grad.double())
    n, width = g.shape
    return math.sqrt(float(((g @ g.T) * _h(r @ r.T, width)).sum()) / (n * n * width))


def _add(null: ClosedNull, signal: Tensor, grad: Tensor) -> None:
    """One batch of rows into one layer's sums, as the pass adds them (with the rows' norms)."""
    add_rows([null], signal, [grad], grad.double().norm(dim=1).unsqueeze(0))


def _closed(signal: Tensor, grad: Tensor, chunk: int = 300) -> ClosedNull:
    """The audit's sums, fed in chunks (as the pass streams) and merged as two ranks would."""
    parts = [ClosedNull(grad.shape[1]), ClosedNull(grad.shape[1])]
    for k, start in enumerate(range(0, len(grad), chunk)):
        _add(parts[k % 2], signal[start : start + chunk], grad[start : start + chunk])
    return ClosedNull.merged(parts)


@pytest.mark.parametrize("name", ["dfa", "dfa_ep1", "small_cnn_dfa"])
def test_the_reported_sigma_brackets_the_exact_double_sum(name: str) -> None:
    y, error, grads = _null_rows(name)
    onehot = torch.nn.functional.one_hot(y, error.shape[1]).double()
    for signal in (error, onehot):  # DFA projects the error, DRTP the target
        for grad in grads:
            spread = _closed(signal, grad).spread()
            assert spread is not None
            middle, low, high = spread
            exact = _exact_std(signal, grad)
            assert low <= exact <= high, (name, exact, low, high)
            assert (high - low) / middle < 0.02  # the bound is O(1/D): 1.3 % at D = 64
            assert low <= middle <= high


def test_one_output_gives_the_exact_sigma() -> None:
    """A scalar regression's error is one number per sample: every ρ is ±1 and the range closes."""
    _, error, grads = _null_rows("dfa")
    signal = error[:, :1] - error[:, 1:2]  # one signed number per sample
    for grad in grads:
        spread = _closed(signal, grad).spread()
        assert spread is not None
        middle, low, high = spread
        assert low == middle == high
        assert middle == pytest.approx(_exact_std(signal, grad), rel=1e-9)


def test_gaussian_draws_of_b_agree_with_the_closed_form() -> None:
    """2,000 draws of B for dfa.pt's h2: their mean is 0 and their spread σ within the draws' error."""
    _, error, grads = _null_rows("dfa")
    grad = grads[2]
    spread = _closed(error, grad).spread()
    assert spread is not None
    sigma = spread[0]
    draws = 2000
    generator = torch.Generator().manual_seed(7)
    r, g = _units(error.double()), _units(grad.double())
    means = []
    for _ in range(draws // 250):
        b = torch.randn(250, error.shape[1], grad.shape[1], generator=generator, dtype=torch.float64)
        credit = torch.einsum("nc,kcw->knw", r, b)
        means.append(((credit * g).sum(-1) / credit.norm(dim=-1)).mean(-1))
    drawn = torch.cat(means)
    assert abs(float(drawn.mean())) < 4 * sigma / math.sqrt(draws)
    assert float(drawn.std()) == pytest.approx(sigma, rel=4 / math.sqrt(2 * (draws - 1)))


def test_the_audit_of_a_dfa_sample_takes_no_draws_and_no_seed(audited: Callable[..., AuditReport]) -> None:
    one, other = audited("dfa", seed=0), audited("dfa", seed=5)
    for a, b in zip(one.measurements.layers, other.measurements.layers, strict=True):
        assert a.null_draws is None and a.null_mean == 0.0
        assert a.null_std_range is not None and a.z_interval is not None
        low, high = a.null_std_range
        assert low <= (a.null_std or 0) <= high
        assert a.z == b.z and a.null_std == b.null_std  # no draw, so no seed
        assert a.z_interval[0] <= (a.z or 0) <= a.z_interval[1]
    doc = one.to_dict()
    assert doc["layers"][2]["z_interval"] == pytest.approx([2.48, 2.49], abs=0.01)


def test_the_audits_closed_form_is_over_every_eval_row(audited: Callable[..., AuditReport]) -> None:
    """σ is the spread of Γ itself: its sums run over all 4,096 eval rows of dfa.pt, not over a
    subsample (the drawn null's 1,024), fed batch by batch with the pass's own row norms."""
    _, error, grads = _null_rows("dfa", 0)
    assert len(error) == 4096
    report = audited("dfa")
    for layer, grad in zip(report.measurements.layers, grads, strict=True):
        whole = ClosedNull(grad.shape[1])
        for start in range(0, len(grad), 256):
            rows = slice(start, start + 256)
            _add(whole, error[rows], grad[rows])
        spread = whole.spread()
        assert spread is not None and layer.null_std_range is not None
        assert layer.null_std == pytest.approx(spread[0], rel=1e-6)
        assert layer.null_std_range == pytest.approx(spread[1:], rel=1e-6)
        assert layer.null_std_sample is None


def test_the_fa_family_and_per_token_dfa_are_still_drawn(audited: Callable[..., AuditReport]) -> None:
    for name in ("fa_mlp", "gpt_mini_dfa"):  # a backward walk per draw; T projections per sequence
        for layer in audited(name).measurements.layers:
            assert layer.null_std_range is None and (layer.null_draws or 0) >= 20, name


def test_rows_with_a_zero_gradient_or_signal_are_left_out_of_every_sum() -> None:
    """As the cosine leaves them out: a zero gradient row (a dead unit's sample) leaves S and Q, a
    zero signal row (a sample the model gets exactly right) too, per layer, in one batch."""
    generator = torch.Generator().manual_seed(2)
    signal = torch.randn(40, 5, generator=generator, dtype=torch.float64)
    grads = [torch.randn(40, 16, generator=generator, dtype=torch.float64) for _ in range(2)]
    signal[3] = 0
    grads[0][[5, 9]] = 0
    together = [ClosedNull(16), ClosedNull(16)]
    add_rows(together, signal, grads, torch.stack([g.norm(dim=1) for g in grads]))
    for null, grad in zip(together, grads, strict=True):
        kept = (signal.norm(dim=1) > 0) & (grad.norm(dim=1) > 0)
        alone = ClosedNull(16)
        _add(alone, signal[kept], grad[kept])
        assert null.rows == alone.rows == int(kept.sum())
        assert torch.allclose(null.cross, alone.cross, rtol=1e-13, atol=1e-15)
        assert torch.allclose(null.signal_gram, alone.signal_gram, rtol=1e-13, atol=1e-15)
    assert together[0].rows == 37 and together[1].rows == 39


def test_bps_null_is_exact_and_agrees_with_random_directions(audited: Callable[..., AuditReport]) -> None:
    """bp's null credit is an independent Gaussian direction per sample: σ = 1/√(N·D) over the N rows Γ
    is the mean of, no draw and no seed. 2,000 draws of such directions for bp.pt's h1 over 1,024 rows
    give that spread within the draws' error, and a mean of 0."""
    one, other = audited("bp", seed=0), audited("bp", seed=5)
    for a, b in zip(one.measurements.layers, other.measurements.layers, strict=True):
        assert a.null_draws is None and a.null_mean == 0.0 and a.null_std_sample is None
        assert a.null_std == pytest.approx(1 / math.sqrt(one.measurements.samples * a.width), rel=1e-12)
        assert a.null_std_range == (a.null_std, a.null_std) and a.z == b.z
        assert a.z == pytest.approx((a.cos or 0) / (a.null_std or 1), rel=1e-12)
    _, _, grads = _null_rows("bp")
    g = _units(grads[1].double())
    generator = torch.Generator().manual_seed(3)
    means = []
    for _ in range(8):
        u = torch.randn(250, *g.shape, generator=generator, dtype=torch.float64)
        means.append(((u * g).sum(-1) / u.norm(dim=-1)).mean(-1))
    drawn, sigma = torch.cat(means), 1 / math.sqrt(g.shape[0] * g.shape[1])
    assert abs(float(drawn.mean())) < 4 * sigma / math.sqrt(len(drawn))
    assert float(drawn.std()) == pytest.approx(sigma, rel=4 / math.sqrt(2 * (len(drawn) - 1)))
