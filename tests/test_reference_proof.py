"""The reference must be backprop. An FA layer written the common way (an nn.Linear subclass
holding B in ``weight_fa``, its forward an autograd Function that sends the error back
through B) makes the model's autograd compute FA's credit: taken as "the gradient", every Γ
would read 1.000. Trained a few FA steps, the net is audited in memory and from its saved
state dict with its own class (and a factory); every Γ and ‖g‖ equals a float64 computation
written here, the layers' own backward against the true gradient. The same layer keeping B
as a plain attribute, unregistered, is refused with the module named."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import ModuleType

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.nn import functional as F

from fa_audit import ExitCode, InputError, audit_module
from fa_audit.conventions import register_plain
from fa_audit.conventions import twin as twin_module
from fa_audit.measure.reference_check import SETTLED

from .cli_runner import run
from .conftest import SAMPLES
from .user_code import FA_LINEAR_FUNCTION, hidden_forward, module_fixture

FANET = (
    """
import torch
from torch import nn

"""
    + FA_LINEAR_FUNCTION
    + '''

class FALinear(nn.Linear):
    def __init__(self, n_in, n_out):
        super().__init__(n_in, n_out)
        self.weight_fa = nn.Parameter(torch.randn(n_out, n_in) / n_in**0.5, requires_grad=False)

    def forward(self, x):
        return FALinearFunction.apply(x, self.weight, self.weight_fa, self.bias)


class PlainB(nn.Linear):
    """The same layer with B as a plain attribute: in no state dict, known to no convention."""

    def __init__(self, n_in, n_out):
        super().__init__(n_in, n_out)
        self.B = torch.randn(n_out, n_in) / n_in**0.5

    def forward(self, x):
        return FALinearFunction.apply(x, self.weight, self.B, self.bias)


class BufferB(nn.Linear):
    """B in a buffer of a name no convention knows: it moves to float64 with the model."""

    def __init__(self, n_in, n_out):
        super().__init__(n_in, n_out)
        self.register_buffer("back", torch.randn(n_out, n_in) / n_in**0.5)

    def forward(self, x):
        return FALinearFunction.apply(x, self.weight, self.back, self.bias)


class FANet(nn.Module):
    layer = FALinear

    def __init__(self, width=64, depth=3):
        super().__init__()
        self.embed = nn.Sequential(self.layer(24, width), nn.Tanh())
        self.blocks = nn.ModuleList(nn.Sequential(self.layer(width, width), nn.Tanh()) for _ in range(depth))
        self.head = self.layer(width, 10)
'''
    + hidden_forward()
    + """

class PlainBNet(FANet):
    layer = PlainB


class BufferBNet(FANet):
    layer = BufferB


def fanet(width=64):
    return FANet(width=width)
"""
)
N = 512
LINEARS = ["embed.0", "blocks.0.0", "blocks.1.0", "blocks.2.0", "head"]


folder = module_fixture("fanet", FANET)


def _trained(module: ModuleType, cls: str = "FANet") -> nn.Module:
    """A few steps of the layers' own (FA) training."""
    torch.manual_seed(0)
    model: nn.Module = getattr(module, cls)()
    train = load_file(SAMPLES / "train.safetensors")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    for step in range(6):
        x, y = train["x"][step * 64 : (step + 1) * 64].float(), train["y"][step * 64 : (step + 1) * 64]
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model


def _loader() -> torch.utils.data.DataLoader[tuple[torch.Tensor, ...]]:
    data = load_file(SAMPLES / "eval.safetensors")
    dataset = torch.utils.data.TensorDataset(data["x"][:N].float(), data["y"][:N])
    return torch.utils.data.DataLoader(dataset, batch_size=128)


def _float64_truth(model: nn.Module) -> tuple[list[float], list[float]]:
    """Γ per hidden state (the layers' own backward against the true gradient, written out
    with the same weights) and the median ‖g‖ of the true gradient, all in float64."""
    data = load_file(SAMPLES / "eval.safetensors")
    x, y = data["x"][:N].double(), data["y"][:N]
    net = copy.deepcopy(model).double()
    for layer in net.modules():  # a plain attribute does not follow .double()
        if isinstance(getattr(layer, "B", None), torch.Tensor):
            layer.B = layer.B.double()
    logits, hidden = net(x, return_hidden=True)
    credit = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), hidden)
    state = {k: v.double() for k, v in model.state_dict().items()}
    h, true_hidden = x.clone().requires_grad_(), []
    for name in LINEARS[:-1]:
        h = torch.tanh(h @ state[f"{name}.weight"].T + state[f"{name}.bias"])
        true_hidden.append(h)
    true_logits = h @ state["head.weight"].T + state["head.bias"]
    true = torch.autograd.grad(F.cross_entropy(true_logits, y, reduction="sum"), true_hidden)
    cos = [float(((c * g).sum(1) / (c.norm(dim=1) * g.norm(dim=1))).mean()) for c, g in zip(credit, true, strict=True)]
    return cos, [float(torch.quantile(g.norm(dim=1), 0.5)) for g in true]  # mean of the middle two


def _cli(folder: Path, monkeypatch: pytest.MonkeyPatch, *args: object) -> tuple[int, str, str]:
    monkeypatch.chdir(folder)
    return run(*args, "--data", SAMPLES / "eval.safetensors", "--max-samples", N, "--device", "cpu")


def test_an_fa_layer_with_its_own_backward_is_audited_through_its_twin(
    folder: tuple[Path, ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, module = folder
    model = _trained(module)
    cos, g_norm = _float64_truth(model)
    assert max(cos) < 0.9  # FA credit, not the gradient: a tool that read autograd would print 1.000

    report = audit_module(model, _loader(), method="fa", device="cpu")  # B found on the layers: no feedback=
    layers = report.measurements.layers
    assert [la.cos for la in layers] == pytest.approx(cos, abs=2e-5)
    assert [la.g_norm for la in layers] == pytest.approx(g_norm, rel=1e-4)
    assert all(la.grad_check is not None and la.grad_check < SETTLED for la in layers)
    assert any("plain twins" in note and "weight_fa" in note for note in report.notes)
    held = {k.removesuffix("_fa"): v for k, v in model.state_dict().items() if k.endswith(".weight_fa")}
    same = audit_module(model, _loader(), method="fa", feedback={k.removesuffix(".weight"): v for k, v in held.items()})
    assert [la.cos for la in same.measurements.layers] == [la.cos for la in layers]
    assert any("the same feedback is also in feedback=: read once" in note for note in same.notes)
    with pytest.raises(InputError, match="offers feedback twice, and the two differ: the weight_fa entries"):
        audit_module(model, _loader(), method="fa", feedback={k.removesuffix(".weight"): -v for k, v in held.items()})

    torch.save(model.state_dict(), path / "fanet.pt")  # as its training code saves it, weight_fa included
    for arch in ("module:fanet:FANet", "module:fanet:fanet"):  # the class, and a factory; no --arch-config
        code, out, err = _cli(path, monkeypatch, "run", "fanet.pt", "--arch", arch, "--method", "fa", "--json", "-")
        assert code in (ExitCode.WALK_BACK, ExitCode.INCOMPLETE), err
        cli = json.loads(out)["layers"]
        assert [la["cos"] for la in cli] == pytest.approx([la.cos for la in layers], abs=1e-6)
        assert [la["g_norm"] for la in cli] == pytest.approx(g_norm, rel=1e-4)
        assert all(la["grad_check"] < 1e-6 for la in cli)


def test_an_unknown_layer_with_its_own_backward_is_refused_with_its_name(
    folder: tuple[Path, ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, module = folder
    model = _trained(module, "PlainBNet")
    feedback = {name: layer.B for name, layer in model.named_modules() if isinstance(layer, module.PlainB)}
    with pytest.raises(InputError) as refused:
        audit_module(model, _loader(), method="fa", feedback=feedback, device="cpu")
    message = str(refused.value)  # B stays float32 in the float64 check: its backward cannot even run there
    assert "blocks.0.0 (autograd.Function FALinearFunction)" in message and "register_plain" in message

    buffered = _trained(module, "BufferBNet")
    with pytest.raises(InputError) as refused:
        audit_module(buffered, _loader(), method="fa", device="cpu")
    message = str(refused.value)
    assert "is not the derivative of the loss at h0 (embed), h1 (blocks.0)" in message
    assert "tolerance 0.1 %" in message and "head (autograd.Function FALinearFunction)" in message

    torch.save(model.state_dict(), path / "plainb.pt")
    torch.save(feedback, path / "plainb.feedback.pt")
    code, out, err = _cli(
        path, monkeypatch, "run", "plainb.pt", "--arch", "module:fanet:PlainBNet", "--method", "fa",
        "--feedback", "plainb.feedback.pt", "--json", "-",
    )  # fmt: skip
    assert code == ExitCode.INPUT_ERROR and out == ""
    assert len(err.strip().splitlines()) == 1 and "FALinearFunction" in err and "Traceback" not in err

    monkeypatch.setattr(twin_module, "_REGISTERED", {})
    register_plain(module.PlainB, _plain_copy)  # how the user says what the layer computes
    report = audit_module(model, _loader(), method="fa", feedback=feedback, device="cpu")
    cos, _ = _float64_truth(model)
    assert [la.cos for la in report.measurements.layers] == pytest.approx(cos, abs=2e-5)


def _plain_copy(layer: nn.Linear) -> nn.Linear:
    plain = nn.Linear(layer.in_features, layer.out_features)
    plain.load_state_dict(layer.state_dict())
    return plain


class _TwoReaders(torch.nn.Module):
    """h1 = h0 + block(h0), made by no module and read by two: it cannot be nudged alone."""

    def __init__(self) -> None:
        super().__init__()
        self.embed, self.blocks = torch.nn.Linear(24, 16), torch.nn.ModuleList([torch.nn.Linear(16, 16)])
        self.head, self.aux = torch.nn.Linear(16, 10), torch.nn.Linear(16, 10)

    def forward(self, x: torch.Tensor, return_hidden: bool = False) -> object:
        h0 = torch.tanh(self.embed(x))
        h1 = h0 + torch.tanh(self.blocks[0](h0))
        logits = self.head(h1) + self.aux(h1)
        return (logits, [h0, h1]) if return_hidden else logits


def test_a_hidden_state_the_proof_cannot_nudge_is_said_in_the_verdict() -> None:
    """Not only a null grad_check in the JSON: reference validity names the unproved state."""
    from fa_audit import audit_module

    torch.manual_seed(0)
    x, y = torch.randn(64, 24), torch.randint(0, 10, (64,))
    model = _TwoReaders()
    report = audit_module(model, [(x, y)], method="bp", device="cpu")
    layers = report.measurements.layers
    assert all(layer.grad_check is None for layer in layers)  # made by functional ops, read twice
    notes = report.check("reference_validity").notes
    assert any(n.startswith("not proved against finite differences: h0 (embed), h1 (blocks.0)") for n in notes)
