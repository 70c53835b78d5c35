"""Mixed networks: some layers trained with feedback, some with backprop. The sign-symmetry code
(Xiao et al., "Biologically-plausible learning algorithms can scale to large datasets") trains its
classifier with backprop by default (a plain nn.Linear beside its AsymmetricFeedback layers);
reading that layer as sign-symmetric gave Γ 0.86 where the code's own backward gives 1.00.

``AFNET`` reproduces the code's layout, not its text: AsymmetricFeedbackConv2d keeps int buffers
``stride_tensor`` and ``padding_tensor`` and a ``feedback_weight`` buffer (None for sign_symmetry,
B for feedback_alignment, |M| for sign_symmetry_random_magnitude), and its Function sends the
error back through that B."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.nn import functional as F

from fa_audit import ExitCode, audit_module

from .cli_runner import run
from .conftest import SAMPLES, audited_in, user_module

AFNET = """
import math
import torch
from torch import nn


class AFConvFunc(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, fb, bias, stride, padding):
        ctx.save_for_backward(x, weight, fb, stride, padding)
        return nn.functional.conv2d(x, weight, bias, tuple(stride.tolist()), tuple(padding.tolist()))

    @staticmethod
    def backward(ctx, g):
        x, weight, fb, stride, padding = ctx.saved_tensors
        s, p = tuple(stride.tolist()), tuple(padding.tolist())
        gx = torch.nn.grad.conv2d_input(x.shape, fb, g, s, p)
        gw = torch.nn.grad.conv2d_weight(x, weight.shape, g, s, p)
        return gx, gw, None, g.sum((0, 2, 3)), None, None


class AsymmetricFeedbackConv2d(nn.Conv2d):
    def __init__(self, *args, algo="sign_symmetry", **kwargs):
        super().__init__(*args, **kwargs)
        self.scale = math.sqrt(2 / (self.kernel_size[0] * self.kernel_size[1] * self.out_channels))
        self.algo = algo
        self.register_buffer("stride_tensor", torch.Tensor(self.stride).type(torch.int))
        self.register_buffer("padding_tensor", torch.Tensor(self.padding).type(torch.int))
        feedback = None
        if algo in ("feedback_alignment", "sign_symmetry_random_magnitude"):
            feedback = self.weight.new_empty(self.weight.shape).normal_(0, self.scale)
            if algo == "sign_symmetry_random_magnitude":
                feedback = feedback.abs_()
        self.register_buffer("feedback_weight", feedback)

    def forward(self, x):
        if self.algo == "feedback_alignment":
            fb = self.feedback_weight
        elif self.algo == "sign_symmetry":
            fb = self.weight.sign().detach() * self.scale
        else:
            fb = self.feedback_weight * self.weight.sign().detach()
        return AFConvFunc.apply(x, self.weight, fb, self.bias, self.stride_tensor, self.padding_tensor)


class Net(nn.Module):
    def __init__(self, algo="sign_symmetry"):
        super().__init__()
        self.conv1 = AsymmetricFeedbackConv2d(1, 4, 3, padding=1, algo=algo)
        self.conv2 = AsymmetricFeedbackConv2d(4, 4, 3, padding=1, algo=algo)
        self.fc = nn.Linear(4 * 8 * 8, 10)  # the default: the classifier trains with backprop

    def forward(self, x):
        h = torch.relu(self.conv1(x))
        h = torch.relu(self.conv2(h))
        return self.fc(h.flatten(1))


class ResNet(nn.Module):  # af_resnet's pattern: a block of the code's convolutions added to its input
    def __init__(self, algo="sign_symmetry"):
        super().__init__()
        self.conv1 = AsymmetricFeedbackConv2d(1, 4, 3, padding=1, algo=algo)
        self.conv2 = AsymmetricFeedbackConv2d(4, 16, 3, padding=1, algo=algo)
        self.conv3 = AsymmetricFeedbackConv2d(16, 4, 1, algo=algo)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        h = torch.relu(self.conv1(x))
        h = h + self.conv3(torch.relu(self.conv2(h)))
        return self.fc(torch.relu(h).flatten(1))
"""
HIDDEN = ["conv1", "conv2"]


@pytest.fixture(scope="module")
def afnet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ModuleType]:
    folder = tmp_path_factory.mktemp("afnet")
    return folder, user_module(folder, "afnet", AFNET)


def _images() -> tuple[torch.Tensor, torch.Tensor]:
    data = load_file(SAMPLES / "images_eval.safetensors")
    return data["x"][:256].float(), data["y"][:256].long()


def _own_gamma(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """Γ of the code's own backward against backprop, in float64, per hidden state (conv1, conv2);
    ``net`` is made float64 in place."""
    net = net.double()
    outputs: dict[str, torch.Tensor] = {}
    handles = [getattr(net, n).register_forward_hook(lambda m, a, o, n=n: outputs.__setitem__(n, o)) for n in HIDDEN]
    logits = net(x.double())
    for h in handles:
        h.remove()
    p = logits.softmax(-1)
    onehot = F.one_hot(y, 10).bool()
    e = torch.where(onehot, -p.masked_fill(onehot, 0.0).sum(-1, keepdim=True), p).detach()
    own = torch.autograd.grad(logits, [outputs[n] for n in HIDDEN], e)
    # the true gradient: the same weights through torch's own convolutions
    h0 = F.conv2d(x.double(), net.conv1.weight, net.conv1.bias, padding=1)
    h1 = F.conv2d(torch.relu(h0), net.conv2.weight, net.conv2.bias, padding=1)
    true = torch.autograd.grad(net.fc(torch.relu(h1).flatten(1)), [h0, h1], e)
    rows = zip(own, true, strict=True)
    cos = [F.normalize(c.flatten(1), dim=1).mul(F.normalize(g.flatten(1), dim=1)).sum(1) for c, g in rows]
    return [float(c.mean()) for c in cos]


@pytest.mark.parametrize("algo", ["sign_symmetry", "feedback_alignment"])
def test_the_default_classifier_is_backprop_and_gamma_is_the_codes_own(
    afnet: tuple[Path, ModuleType], algo: str
) -> None:
    _, module = afnet
    torch.manual_seed(0)
    net = module.Net(algo)
    x, y = _images()
    method = "sign_symmetry" if algo == "sign_symmetry" else "fa"
    report = audit_module(net, [(x, y)], method=method, hidden=HIDDEN, device="cpu")
    expected = _own_gamma(net, x, y)
    assert [layer.cos for layer in report.measurements.layers] == pytest.approx(expected, abs=1e-5)
    assert report.measurements.layers[1].cos == pytest.approx(1.0, abs=1e-9)  # fc's own W carries it
    assert report.loading["bp_layers"] == ["fc"] and any("a mixed network: fc" in n for n in report.notes)


def test_the_codes_scale_weighs_a_residual_block_against_its_shortcut(afnet: tuple[Path, ModuleType]) -> None:
    """The code's B is s_l · sign(W) (a convolution's s_l = √(2 / (k_h k_w C_out))): in a chain the
    scales cancel, but where a block is added to its input they weigh the block's path against the
    shortcut's, and a scale-free sign(W) gives another Γ at the state before the block."""
    import copy

    _, module = afnet
    torch.manual_seed(0)
    net = module.ResNet()
    x, y = _images()
    report = audit_module(net, [(x, y)], method="sign_symmetry", hidden=["conv1", "conv3"], device="cpu")
    plain = copy.deepcopy(net).double()
    for conv in (plain.conv1, plain.conv2, plain.conv3):
        conv.forward = torch.nn.Conv2d.forward.__get__(conv)  # torch's own convolution: backprop
    own, true = (_grads_at(n, ["conv1", "conv3"], x, y) for n in (copy.deepcopy(net).double(), plain))
    want = [_mean_cos(c, g) for c, g in zip(own, true, strict=True)]
    assert [layer.cos for layer in report.measurements.layers] == pytest.approx(want, abs=1e-5)
    unscaled = copy.deepcopy(net).double()
    for conv in (unscaled.conv1, unscaled.conv2, unscaled.conv3):
        conv.scale = 1.0
    scale_free = _mean_cos(_grads_at(unscaled, ["conv1"], x, y)[0], true[0])
    assert abs(scale_free - want[0]) > 0.05  # what a scale-free sign(W) gives: another Γ


def _mean_cos(c: torch.Tensor, g: torch.Tensor) -> float:
    return float(((c * g).sum(1) / (c.norm(dim=1) * g.norm(dim=1))).mean())


def _grads_at(net: torch.nn.Module, names: list[str], x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    """The gradient the network's own backward gives at each named module's output (float64)."""
    store: dict[str, torch.Tensor] = {}
    keep = [lambda m, a, o, n=n: store.__setitem__(n, o) for n in names]
    handles = [net.get_submodule(n).register_forward_hook(k) for n, k in zip(names, keep, strict=True)]
    logits = net(x.double())
    for handle in handles:
        handle.remove()
    loss = F.cross_entropy(logits, y, reduction="sum")
    return [g.flatten(1) for g in torch.autograd.grad(loss, [store[n] for n in names])]


def test_a_file_of_the_code_is_read_with_its_int_buffers_and_its_bp_classifier(
    afnet: tuple[Path, ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the code saves it (``checkpoint.pth.tar``, a state dict with the int buffers), audited
    through ``--arch module:``: no refusal for the buffers, none for fc's missing feedback."""
    folder, module = afnet
    torch.manual_seed(1)
    net = module.Net("feedback_alignment")
    torch.save({"epoch": 3, "arch": "afnet", "state_dict": net.state_dict()}, folder / "checkpoint.pth.tar")
    x, y = _images()
    save_file({"x": x, "y": y}, str(folder / "eval.safetensors"))
    flags = ["--arch", "module:afnet:Net", "--method", "fa", "--hidden", "conv1", "--hidden", "conv2"]
    report = audited_in(folder, monkeypatch, "checkpoint.pth.tar", *flags, "--data", "eval.safetensors")
    assert all(layer["refused"] is None for layer in report["layers"])
    assert report["loading"]["bp_layers"] == ["fc"]
    expected = _own_gamma(net, x, y)
    assert [layer["cos"] for layer in report["layers"]] == pytest.approx(expected, abs=1e-5)


def test_bp_layers_declared_on_the_command_line() -> None:
    """fa_mlp with its head declared as trained by backprop: the credit at h3 goes through W_head,
    so it is the gradient itself; an FA head gives 0.80 there."""
    code, out, err = run("run", SAMPLES / "fa_mlp.pt", "--bp-layers", "head", "--json", "-")
    assert code in (ExitCode.WALK_BACK, ExitCode.INCOMPLETE), err
    report = json.loads(out)
    assert report["layers"][-1]["cos"] == pytest.approx(1.0, abs=1e-9)
    assert report["loading"]["bp_layers"] == ["head"] and any("as --bp-layers says" in n for n in report["notes"])
    code, _, err = run("run", SAMPLES / "fa_mlp.pt", "--bp-layers", "layers")
    assert code == ExitCode.INPUT_ERROR and "which is not a Linear or Conv layer" in err
