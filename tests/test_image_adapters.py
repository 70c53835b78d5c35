"""The two image adapters, small_cnn and vit_mini: build, save, load and the same logits;
DFA and FA credit against computations written here (FA through a test-local autograd
Function that sends the gradient through B, conv_transpose2d for convolutions), in
float64 and independent of fa-audit's hooks."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from torch.nn import functional as F

from fa_audit import ExitCode, save_bundle
from fa_audit.adapt import build_model
from fa_audit.loading import load_bundle
from model_adapters import get_adapter

from .cli_runner import run

CONFIGS: dict[str, dict[str, Any]] = {
    "small_cnn": {"in_channels": 1, "image_size": 8, "width": 4, "depth": 3, "num_classes": 10},
    "vit_mini": {
        "in_channels": 1,
        "image_size": 8,
        "patch_size": 2,
        "dim": 16,
        "depth": 2,
        "heads": 2,
        "num_classes": 10,
    },
}
N = 128


class _LinearFA(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, fb: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(fb)
        return F.linear(x, w, b)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        (fb,) = ctx.saved_tensors
        return grad @ fb, None, None, None


class _ConvFA(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, conv: nn.Conv2d, fb: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(fb)
        ctx.conv, ctx.size = conv, x.shape[-1]
        out: torch.Tensor = conv(x)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (fb,) = ctx.saved_tensors
        conv = ctx.conv
        out = F.conv_transpose2d(grad, fb, stride=conv.stride, padding=conv.padding)
        return out[..., : ctx.size, : ctx.size], None, None


def _fa_copy(model: nn.Module, feedback: dict[str, torch.Tensor]) -> nn.Module:
    """The model with every Linear and Conv2d sending its input gradient through B."""
    twin = copy.deepcopy(model)
    for name, module in twin.named_modules():
        if isinstance(module, nn.Linear):
            fb = feedback[name].double()
            module.forward = lambda x, m=module, fb=fb: _LinearFA.apply(x, m.weight, m.bias, fb)  # type: ignore[method-assign]
        elif isinstance(module, nn.Conv2d):
            fb = feedback[name].double()
            plain = copy.deepcopy(module)
            module.forward = lambda x, plain=plain, fb=fb: _ConvFA.apply(x, plain, fb)  # type: ignore[method-assign]
    return twin


def _hidden_names(arch: str) -> list[str]:
    depth = CONFIGS[arch]["depth"]
    return (
        [f"stages.{i}" for i in range(depth)]
        if arch == "small_cnn"
        else ["embed", *(f"blocks.{i}" for i in range(depth))]
    )


def _forward(model: nn.Module, arch: str, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Hidden states written out per architecture (no hooks)."""
    if arch == "small_cnn":
        hidden, h = [], x
        for stage in model.stages:  # type: ignore[attr-defined]
            h = stage(h)
            hidden.append(h)
        return model.head(h.flatten(1)), hidden  # type: ignore[operator]
    hidden = [model.embed(x)]  # type: ignore[operator]
    for block in model.blocks:  # type: ignore[attr-defined]
        hidden.append(block(hidden[-1]))
    return model.head(model.norm(hidden[-1]).mean(1)), hidden  # type: ignore[operator]


def _reference(
    model: nn.Module, arch: str, method: str, feedback: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor
) -> list[float]:
    net = copy.deepcopy(model).double().eval()
    logits, hidden = _forward(net, arch, x.double())
    e = (logits.softmax(-1) - F.one_hot(y, 10).double()).detach()
    true = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), hidden)
    if method == "dfa":
        credit = [e @ feedback[name].double() for name in _hidden_names(arch)]
    else:
        fa_logits, fa_hidden = _forward(_fa_copy(net, feedback), arch, x.double())
        credit = list(torch.autograd.grad(fa_logits, fa_hidden, e))
    pairs = [(c.detach().flatten(1), g.flatten(1)) for c, g in zip(credit, true, strict=True)]
    return [float(((c * g).sum(1) / (c.norm(dim=1) * g.norm(dim=1))).mean()) for c, g in pairs]


def _setup(arch: str, method: str, tmp: Path) -> tuple[nn.Module, dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    model = get_adapter(arch).build(CONFIGS[arch], seed=3)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        for m in model.module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
    x, y = torch.randn(N, 1, 8, 8, generator=g), torch.randint(0, 10, (N,), generator=g)
    with torch.no_grad():
        _, hidden = model.forward_hidden(x[:1])
    if method == "dfa":
        feedback = {
            n: torch.randn(10, h[0].numel(), generator=g) for n, h in zip(model.hidden_modules, hidden, strict=True)
        }
    else:
        feedback = {
            n: torch.randn(m.weight.shape, generator=g) * 0.3
            for n, m in model.module.named_modules()
            if isinstance(m, nn.Linear | nn.Conv2d)
        }
    save_bundle(
        tmp / "ckpt.pt", model.module, arch=arch, arch_config=CONFIGS[arch], method=method, feedback=feedback,
        meta={"data": "eval.safetensors"},
    )  # fmt: skip
    save_file({"x": x, "y": y}, tmp / "eval.safetensors")
    return model.module, feedback, x, y


@pytest.mark.parametrize("arch", CONFIGS)
def test_build_save_load_gives_the_same_logits(arch: str, tmp_path: Path) -> None:
    model, _, x, _ = _setup(arch, "dfa", tmp_path)
    loaded = build_model(load_bundle(tmp_path / "ckpt.pt"))
    with torch.no_grad():
        assert torch.equal(loaded.forward_hidden(x)[0], model.eval()(x))
    assert list(loaded.hidden_modules) == _hidden_names(arch)


@pytest.mark.parametrize("method", ["dfa", "fa"])
@pytest.mark.parametrize("arch", CONFIGS)
def test_credit_matches_an_independent_computation(arch: str, method: str, tmp_path: Path) -> None:
    model, feedback, x, y = _setup(arch, method, tmp_path)
    code, out, err = run("run", tmp_path / "ckpt.pt", "--json", "-", "--device", "cpu")
    assert code in (ExitCode.TRUST, ExitCode.WALK_BACK, ExitCode.INCOMPLETE), err
    got = [layer["cos"] for layer in json.loads(out)["layers"]]
    assert got == pytest.approx(_reference(model, arch, method, feedback, x, y), abs=2e-5)
