"""A piecewise-linear network (ReLU, max-pool) has kinks, and a finite difference that
crosses one misses autograd's gradient although the backward is backprop: on a ResNet-18
of 65,536 units per state, nudges of 1e-5 ‖h‖ missed by 1.7 %. A layer that misses is
checked again along the same directions with nudges 100 times shorter, and again, where a
crossed kink's error shrinks and a replaced backward's does not. A ReLU's dead units feeding a
max-pool are ties, where no step is short enough: the nudges leave a feature map's exact zeros alone."""

from __future__ import annotations

import functools
from collections.abc import Callable

import pytest
import torch
from torch import nn

from fa_audit import InputError, audit_module
from fa_audit.measure import diagnostics, reference_check


class Kink(nn.Module):
    def __init__(self, t: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("t", t)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.relu(h - self.t)


class Kinked(nn.Sequential):
    """h1 = ReLU(h0 − t), every unit of h1 ``gap`` ‖h0‖ above its kink on the inputs it was
    made for: a nudge of 10 gap ‖h0‖ crosses some kinks, one of gap / 10 ‖h0‖ none."""

    def __init__(self, x: torch.Tensor, gap: float) -> None:
        torch.manual_seed(0)
        embed = nn.Linear(4, 8)
        with torch.no_grad():
            h0 = embed(x[:1])[0]
        super().__init__(embed, Kink(h0 - gap * h0.norm()), nn.Linear(8, 3))


def _audit(model: nn.Module, x: torch.Tensor) -> list[float | None]:
    y = torch.tensor([0, 1])
    report = audit_module(model, [(x, y)], method="bp", hidden=["0", "1"], device="cpu")
    return [layer.grad_check for layer in report.measurements.layers]


@pytest.mark.parametrize(("gap", "missed"), [(1e-6, 1), (1e-8, 2)])
def test_a_kink_crossed_by_the_first_nudges_is_not_taken_for_a_replaced_backward(
    monkeypatch: pytest.MonkeyPatch, gap: float, missed: int
) -> None:
    """``missed``: how many of the steps cross a kink ``gap`` ‖h0‖ away; a ResNet-18 of random
    weights on CIFAR-sized inputs had one within 1e-7 ‖h‖ in 1 audit of 40 (none at 1e-9)."""
    x = torch.randn(1, 4, generator=torch.Generator().manual_seed(1)).repeat(2, 1)  # two copies: one sample's kinks
    model = Kinked(x, gap)
    with monkeypatch.context() as patched:
        patched.setattr(reference_check, "STEPS", reference_check.STEPS[:missed])
        with pytest.raises(InputError, match="misses float64 finite differences"):
            _audit(model, x)
    checks = _audit(model, x)
    assert all(c is not None and c < 1e-4 for c in checks), checks  # tolerance 1e-3


def test_a_max_pool_over_dead_relu_units_is_not_taken_for_a_replaced_backward(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """LeNet's pattern (ReLU, then a 2×2 max-pool) at h0: a window of dead units is a tie,
    whose derivative autograd takes on one side; nudged there, the difference never agrees."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 7 * 7, 3))
    x, y = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2)), torch.tensor([0, 1])
    with torch.no_grad():
        dead = model[1](model[0](x)) == 0
    assert 0.3 < float(dead.double().mean()) < 0.7  # ties in many windows

    def audit() -> list[float | None]:
        report = audit_module(model, [(x, y)], method="bp", hidden=["1", "3"], device="cpu")
        return [layer.grad_check for layer in report.measurements.layers]

    with monkeypatch.context() as patched:  # nudging every unit, zeros included
        patched.setattr(reference_check, "provable", lambda h: torch.ones_like(h, dtype=torch.bool))
        with pytest.raises(InputError, match=r"derivative of the loss at h0 \(1\): it misses float64 finite"):
            audit()
    checks = audit()
    assert all(c is not None and c < 1e-6 for c in checks), checks


def test_a_max_pool_over_equal_live_units_is_not_taken_for_a_replaced_backward(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Digits on a constant background: a ReLU's live units there all hold the same value (the
    bias's), so a 2×2 max-pool window of them is a tie between equal non-zero values, where the
    loss has one-sided derivatives only (BioTorch's LeNet on real digits was refused for it, 22.8 %).
    The nudges leave values that tie within a sample alone, as they leave exact zeros."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(6 * 6 * 6, 3))
    with torch.no_grad():
        model[0].bias.fill_(0.1)  # the background's activation: positive, equal everywhere
    x = torch.zeros(2, 1, 16, 16)
    x[0, 0, 4:11, 6:9] = 1.0  # a stroke on an empty page
    x[1, 0, 5:8, 3:13] = 1.0
    y = torch.tensor([0, 1])
    with torch.no_grad():
        relu = model[1](model[0](x))
    assert float(diagnostics.tied(relu).double().mean()) > 0.3 and bool((relu > 0).any())

    def audit() -> list[float | None]:
        report = audit_module(model, [(x, y)], method="bp", hidden=["1", "3"], device="cpu")
        return [layer.grad_check for layer in report.measurements.layers]

    with monkeypatch.context() as patched:  # nudging the ties too
        patched.setattr(reference_check, "provable", lambda h: h != 0)
        with pytest.raises(InputError, match=r"derivative of the loss at h0 \(1\): it misses float64 finite"):
            audit()
    checks = audit()
    assert all(c is not None and c < 1e-4 for c in checks), checks


def _rounded(g: torch.Tensor, rounding: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """⟨z, ê⟩ of a model whose true gradient is ``g``, each evaluation off by float64's rounding of a
    huge loss (``rounding``, absolute: the same along every direction), the nudges ±δ as the proof stacks them."""
    signs = torch.tensor([1.0, 1.0, -1.0, -1.0], dtype=torch.float64)[:, None]
    return lambda delta: (delta * g).flatten(2).sum(2) + rounding * signs


def test_directions_nearly_orthogonal_to_the_gradient_are_drawn_again_and_a_wrong_one_still_fails() -> None:
    """The error is relative to ⟨g, v⟩: along directions nearly orthogonal to g, float64's rounding
    of a stream of norm 7e9 took a language model's check past the tolerance now and then (a false
    refusal). Fresh directions settle it; a backward that is not the gradient fails along both."""
    generator = torch.Generator().manual_seed(0)
    h = torch.randn(2, 64, dtype=torch.float64, generator=generator)
    g = torch.randn(2, 64, dtype=torch.float64, generator=generator)
    fresh = functools.partial(diagnostics.random_nudges, h, reference_check.DIRECTIONS, 1.0, generator)
    unit = fresh()
    along = (unit * g).sum(2, keepdim=True) / g.square().sum(1, keepdim=True)
    unit = unit - (1 - 1e-6) * along * g  # ⟨g, v⟩ at 1e-6 of its size
    objective = _rounded(g, 1e-12)
    assert reference_check._laddered(objective, unit, g, 1e-300).failed  # the first directions alone: refused
    check = reference_check._twice(objective, unit, g, 1e-300, fresh)
    assert check.error is not None and check.error < 1e-4, check
    wrong = g + torch.randn(2, 64, dtype=torch.float64, generator=generator) * g.norm() / 8  # ‖g − c‖ ≈ ‖g‖
    check = reference_check._twice(_rounded(wrong, 1e-12), fresh(), g, 1e-300, fresh)
    assert check.failed and check.error is not None and check.error > 0.1, check
