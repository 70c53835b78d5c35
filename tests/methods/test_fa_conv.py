"""FA's walk through a convolution runs its transposed convolution with B in place of W
(output padding for the positions past the last window): bit for bit the gradient autograd
gives through the same convolution with B, for strides, dilations, groups and 1-d
convolutions; padding given as a word or another padding mode goes through autograd."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fa_audit.methods.fa import _conv_input_grad

CONVS = [
    (nn.Conv2d(6, 8, 3, stride=2, padding=1), (4, 6, 9, 9)),
    (nn.Conv2d(6, 6, 3, padding=2, dilation=2, groups=3), (4, 6, 8, 8)),
    (nn.Conv2d(3, 4, (3, 1), stride=(1, 2)), (2, 3, 7, 8)),
    (nn.Conv1d(3, 5, 4, stride=3), (2, 3, 17)),
    (nn.Conv2d(4, 8, 1, stride=2, bias=False), (2, 4, 9, 10)),  # a ResNet's shortcut, odd and even sizes
    (nn.Conv2d(8, 8, 3, stride=2, padding=(1, 0), groups=8), (2, 8, 10, 11)),  # depthwise
    (nn.Conv2d(4, 4, 3, padding="same"), (2, 4, 7, 7)),
    (nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"), (2, 4, 7, 7)),
]


@pytest.mark.parametrize(("conv", "shape"), CONVS, ids=lambda c: str(c))
def test_the_input_gradient_kernel_equals_autograd_through_the_convolution_with_b(
    conv: nn.Conv1d | nn.Conv2d, shape: tuple[int, ...]
) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g)
    grad_out = torch.randn(conv(x).shape, generator=g)
    b = torch.randn(conv.weight.shape, generator=g)
    probe = x.clone().requires_grad_()
    (want,) = torch.autograd.grad(conv._conv_forward(probe, b, None), probe, grad_out)
    assert torch.equal(_conv_input_grad(conv, x, b, grad_out), want)
