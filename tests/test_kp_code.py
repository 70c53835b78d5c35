"""The Kolen-Pollack / FA code of "Deep Learning without Weight Transport" in its PyTorch port:
layers built with legacy constructors (``torch.Tensor(o, i)``, then ``.to(self.weight.device)``,
which the meta device cannot build), and a ``KPConv2d`` that is an ``nn.Module`` holding a 4-D
``weight`` and ``weight_fa`` rather than an ``nn.Conv2d``. ``KPNET`` reproduces that layout. Read
as the code saves it (a ``.t7`` state dict), the audit's Γ is the code's own backward's, in float64."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.nn import functional as F

from .conftest import SAMPLES, audited_in, user_module

KPNET = """
import math
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd import Function


class FAConvFunction(Function):
    @staticmethod
    def forward(ctx, input, weight, weight_fa, bias, stride, padding):
        ctx.save_for_backward(input, weight, weight_fa, bias)
        ctx.stride, ctx.padding = stride, padding
        return F.conv2d(input, weight, bias, stride, padding)

    @staticmethod
    def backward(ctx, grad_output):
        input, weight, weight_fa, bias = ctx.saved_tensors
        gi = torch.nn.grad.conv2d_input(input.shape, weight_fa, grad_output, ctx.stride, ctx.padding)
        gw = torch.nn.grad.conv2d_weight(input, weight.shape, grad_output, ctx.stride, ctx.padding)
        return gi, gw, None, grad_output.sum((0, 2, 3)), None, None


class LinearFAFunction(Function):
    @staticmethod
    def forward(ctx, input, weight, weight_fa, bias):
        ctx.save_for_backward(input, weight, weight_fa, bias)
        return input.matmul(weight.t()) + bias

    @staticmethod
    def backward(ctx, g):
        input, weight, weight_fa, bias = ctx.saved_tensors
        return g.matmul(weight_fa), g.t().matmul(input), None, g.sum(0)


class KPConv2d(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0):
        super().__init__()
        self.stride, self.padding = (stride, stride), (padding, padding)
        self.weight = nn.Parameter(torch.Tensor(out_channels, in_channels, kernel_size, kernel_size))
        self.weight_fa = nn.Parameter(torch.Tensor(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.Tensor(out_channels))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        nn.init.kaiming_uniform_(self.weight_fa, a=math.sqrt(5))
        nn.init.zeros_(self.bias)

    def forward(self, x):
        return FAConvFunction.apply(x, self.weight, self.weight_fa, self.bias, self.stride, self.padding)


class KPLinear(nn.Module):
    def __init__(self, i, o):
        super().__init__()
        self.weight = nn.Parameter(torch.Tensor(o, i))
        self.bias = nn.Parameter(torch.Tensor(o))
        self.weight_fa = nn.Parameter(torch.rand(o, i, requires_grad=False).to(self.weight.device))
        nn.init.kaiming_uniform_(self.weight)
        nn.init.kaiming_uniform_(self.weight_fa)
        nn.init.constant_(self.bias, 1)

    def forward(self, x):
        return LinearFAFunction.apply(x, self.weight, self.weight_fa, self.bias)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = KPConv2d(1, 4, 3, stride=2, padding=1)
        self.fc1 = KPLinear(4 * 4 * 4, 32)
        self.fc2 = KPLinear(32, 10)

    def forward(self, x):
        h = torch.relu(self.conv1(x))
        h = torch.relu(self.fc1(h.flatten(1)))
        return self.fc2(h)
"""


def _own_and_true(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """Γ of the code's own backward against backprop at conv1's and fc1's outputs, in float64."""
    net = net.double()
    x = x.double()
    h0 = net.conv1(x)
    h1 = net.fc1(torch.relu(h0).flatten(1))
    logits = net.fc2(torch.relu(h1))
    p = logits.softmax(-1)
    onehot = F.one_hot(y, 10).bool()
    e = torch.where(onehot, -p.masked_fill(onehot, 0.0).sum(-1, keepdim=True), p).detach()
    own = torch.autograd.grad(logits, [h0, h1], e)
    t0 = F.conv2d(x, net.conv1.weight, net.conv1.bias, 2, 1)
    t1 = F.linear(torch.relu(t0).flatten(1), net.fc1.weight, net.fc1.bias)
    true = torch.autograd.grad(F.linear(torch.relu(t1), net.fc2.weight, net.fc2.bias), [t0, t1], e)
    rows = zip(own, true, strict=True)
    return [float(F.cosine_similarity(c.flatten(1), g.flatten(1), eps=0.0).mean()) for c, g in rows]


def test_the_kp_code_as_saved_audits_to_its_own_backward(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = user_module(tmp_path, "kpnet", KPNET)
    torch.manual_seed(0)
    net = module.Net()
    torch.save(net.state_dict(), tmp_path / "kp.t7")
    data = load_file(SAMPLES / "images_eval.safetensors")
    x, y = data["x"][:256].float(), data["y"][:256].long()
    save_file({"x": x, "y": y}, str(tmp_path / "eval.safetensors"))
    flags = ["--arch", "module:kpnet:Net", "--method", "kp", "--hidden", "conv1", "--hidden", "fc1"]
    report = audited_in(tmp_path, monkeypatch, "kp.t7", *flags, "--data", "eval.safetensors")
    assert [layer["cos"] for layer in report["layers"]] == pytest.approx(_own_and_true(net, x, y), abs=1e-5)
    assert all(layer["grad_check"] is not None and layer["grad_check"] < 1e-6 for layer in report["layers"])
