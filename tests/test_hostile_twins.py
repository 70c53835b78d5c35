"""A plain twin is accepted only where its forward equals the layer's: a layer that merely carries a
known FA library's attribute name (``weight_fa``, ``weight_backward``, ``fixed_fb_weights``) while it
computes something else would be audited as another network, its report claiming autograd's
reference. Each such layer is refused, named; so is a layer whose forward is not deterministic."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fa_audit import InputError, audit_module


class ReluInside(nn.Linear):
    """A Linear with its ReLU inside, holding weight_fa: its twin would drop the ReLU."""

    def __init__(self, i: int, o: int) -> None:
        super().__init__(i, o)
        self.weight_fa = nn.Parameter(torch.randn(o, i), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(super().forward(x))


class Binarised(nn.Linear):
    """A binarised Linear holding weight_backward (BioTorch's name): its forward uses sign(W)."""

    def __init__(self, i: int, o: int) -> None:
        super().__init__(i, o)
        self.weight_backward = nn.Parameter(torch.randn(o, i), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, torch.sign(self.weight), self.bias)


class Squash(nn.Module):
    """An activation holding fixed_fb_weights (the DRTP code's name): its twin would be the identity."""

    def __init__(self) -> None:
        super().__init__()
        self.fixed_fb_weights = nn.Parameter(torch.randn(10, 32), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(3 * x)


class Noisy(nn.Linear):
    """A Linear holding weight_fa whose forward draws noise even in eval mode."""

    def __init__(self, i: int, o: int) -> None:
        super().__init__(i, o)
        self.weight_fa = nn.Parameter(torch.randn(o, i), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) + 0.1 * torch.randn_like(x[..., :1])


class Net(nn.Module):
    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.embed = nn.Linear(24, 32)
        self.blocks = nn.ModuleList([layer])
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor, return_hidden: bool = False) -> object:
        h0 = torch.tanh(self.embed(x))
        h1 = self.blocks[0](h0)
        logits = self.head(h1)
        return (logits, [h0, h1]) if return_hidden else logits


@pytest.mark.parametrize(
    ("layer", "says"),
    [
        (lambda: ReluInside(32, 32), "computes another forward than the layer"),
        (lambda: Binarised(32, 32), "computes another forward than the layer"),
        (Squash, "computes another forward than the layer"),
        (lambda: Noisy(32, 32), "its forward is not deterministic"),
    ],
)
def test_a_layer_whose_twin_computes_another_forward_is_refused(layer: object, says: str) -> None:
    torch.manual_seed(0)
    model = Net(layer()).eval()  # type: ignore[operator]
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 24, generator=g), torch.randint(0, 10, (64,), generator=g)
    with pytest.raises(InputError, match=says) as raised:
        audit_module(model, [(x, y)], method="bp", device="cpu")
    assert "blocks.0" in str(raised.value)
