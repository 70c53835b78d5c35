"""The float64 model's convolutions with few output positions run as one product over the unfolded
input (fa_audit/measure/float64_model.py): the same outputs and gradients as torch's own float64
convolution, to float64's rounding, and torch's own wherever the product does not apply."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from fa_audit.measure.float64_model import UNFOLD_POSITIONS, in_float64
from model_adapters import AdaptedModel

Tensor = torch.Tensor


class _Net(nn.Module):
    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x).flatten(1)


def _both(conv: nn.Conv2d, x: Tensor) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
    """(output, input gradient, weight gradient) of the float64 model, and of torch's float64
    convolution on a float64 copy of the same layer."""
    model64 = in_float64(AdaptedModel(module=_Net(conv), hidden_modules=["conv"], deep_prefixes=[]))
    x64 = x.double().requires_grad_(True)
    out = model64.module(x64)
    grads = torch.autograd.grad((out * torch.linspace(-1, 1, out.shape[1], dtype=torch.float64)).sum(), x64)
    reference = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                          conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode).double()  # fmt: skip
    reference.load_state_dict({k: v.double() for k, v in conv.state_dict().items()})
    x_ref = x.double().requires_grad_(True)
    expected = reference(x_ref).flatten(1)
    expected_grads = torch.autograd.grad(
        (expected * torch.linspace(-1, 1, expected.shape[1], dtype=torch.float64)).sum(), x_ref
    )
    return (out, *grads), (expected, *expected_grads)


@pytest.mark.parametrize(
    ("channels", "size", "kernel", "stride", "padding", "dilation", "bias"),
    [(64, 2, 3, 1, 1, 1, True), (32, 8, 3, 2, 1, 1, False), (16, 4, 1, 1, 0, 1, True), (8, 7, 3, 2, 2, 2, True),
     (8, 5, (3, 1), (1, 2), (1, 0), 1, False)],
)  # fmt: skip
def test_an_unfolded_convolution_is_torchs_to_float64_rounding(
    channels: int,
    size: int,
    kernel: int,
    stride: int,
    padding: int,
    dilation: int,
    bias: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(channels, 24, kernel, stride, padding, dilation, bias=bias)
    x = torch.randn(5, channels, size, size)
    unfolded = []
    unfold = F.unfold
    monkeypatch.setattr(F, "unfold", lambda *a, **k: unfolded.append(1) or unfold(*a, **k))
    (out, grad), (expected, expected_grad) = _both(conv, x)
    assert unfolded  # the product ran, not torch's convolution
    positions = out.shape[1] // 24
    assert positions <= UNFOLD_POSITIONS  # these shapes take the product
    assert torch.allclose(out, expected, rtol=1e-12, atol=1e-14)
    assert torch.allclose(grad, expected_grad, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("layer", ["many positions", "groups", "reflect padding", "same padding"])
def test_torchs_own_convolution_where_the_product_does_not_apply(layer: str) -> None:
    torch.manual_seed(1)
    conv = {
        "many positions": nn.Conv2d(4, 8, 3, padding=1),
        "groups": nn.Conv2d(8, 8, 3, padding=1, groups=4),
        "reflect padding": nn.Conv2d(4, 8, 3, padding=1, padding_mode="reflect"),
        "same padding": nn.Conv2d(4, 8, 3, padding="same"),
    }[layer]
    size = 16 if layer == "many positions" else 3
    x = torch.randn(3, conv.in_channels, size, size)
    (out, grad), (expected, expected_grad) = _both(conv, x)
    assert torch.equal(out, expected) and torch.equal(grad, expected_grad)


def test_the_float32_model_is_left_as_it_was() -> None:
    conv = nn.Conv2d(64, 8, 3, padding=1)
    x = torch.randn(2, 64, 2, 2)
    before = conv(x)
    in_float64(AdaptedModel(module=_Net(conv), hidden_modules=["conv"], deep_prefixes=[]))
    assert (
        type(conv) is nn.Conv2d
        and torch.equal(conv(x), before)
        and torch.equal(before, F.conv2d(x, conv.weight, conv.bias, padding=1))
    )
