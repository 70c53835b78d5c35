"""A user's own FA layer keeping B under its own attribute name (``self.B``, as a plain
attribute or a buffer): ``--feedback-attr B`` / ``feedback_attr="B"`` says where B lives, the
layers are audited through their plain twins, and Γ is the layers' own backward against the true
gradient in float64. Without it, one sentence says what to pass."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
import torch

from fa_audit import InputError, audit_module

from .conftest import SAMPLES, audited_in, user_module
from .test_conventions import LAYERS, SAMPLE, N, X, Y, _rand, reference_fa
from .user_code import FA_LINEAR_FUNCTION

USER_FA = (
    """
import torch
from torch import nn
"""
    + FA_LINEAR_FUNCTION
    + """


class MyFA(nn.Module):
    def __init__(self, n_in, n_out, as_buffer):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_out, n_in))
        self.bias = nn.Parameter(torch.zeros(n_out))
        b = torch.zeros(n_out, n_in)
        if as_buffer:
            self.register_buffer("B", b)
        else:
            self.B = b

    def forward(self, x):
        return FALinearFunction.apply(x, self.weight, self.B, self.bias)


class Net(nn.Module):
    def __init__(self, as_buffer=True):
        super().__init__()
        widths = [24, 64, 64, 64]
        self.layers = nn.ModuleList(nn.Sequential(MyFA(w, 64, as_buffer), nn.Tanh()) for w in widths)
        self.head = MyFA(64, 10, as_buffer)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return self.head(x)
"""
)
HIDDEN = ["layers.*"]


def _model(module: ModuleType, as_buffer: bool) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """The sample FA network's weights in the user's layers, with a B of their own."""
    net = module.Net(as_buffer=as_buffer)
    state = SAMPLE["state_dict"]
    used = {}
    for i, name in enumerate(LAYERS):
        layer = net.head if name == "head" else net.layers[i][0]
        with torch.no_grad():
            layer.weight.copy_(state[f"{name}.weight"])
            layer.bias.copy_(state[f"{name}.bias"])
            layer.B.copy_(_rand(*layer.weight.shape, seed=70 + i))
        used[name] = layer.B.clone()
    return net.eval(), used


@pytest.mark.parametrize("as_buffer", [True, False])
def test_your_layers_attribute_is_their_feedback_in_memory(tmp_path: Path, as_buffer: bool) -> None:
    module = user_module(tmp_path, "userfa", USER_FA)
    net, used = _model(module, as_buffer)
    batches = [(X[i : i + 64].float(), Y[i : i + 64]) for i in range(0, N, 64)]
    with pytest.raises(InputError) as refused:  # B where fa-audit cannot know it: one sentence, no StopIteration
        audit_module(net, batches, method="fa", hidden=HIDDEN, device="cpu")
    assert "--feedback-attr B (feedback_attr= in the API)" in str(refused.value)
    report = audit_module(net, batches, method="fa", hidden=HIDDEN, feedback_attr="B", device="cpu")
    assert [la.cos for la in report.measurements.layers] == pytest.approx(reference_fa(state(), used), abs=2e-5)
    assert report.loading["convention"] == "attribute:B" and any("plain twins" in n for n in report.notes)


def test_your_layers_buffer_is_their_feedback_in_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = user_module(tmp_path, "userfa", USER_FA)
    net, used = _model(module, as_buffer=True)
    torch.save(net.state_dict(), tmp_path / "userfa.pt")
    report = audited_in(
        tmp_path, monkeypatch, str(tmp_path / "userfa.pt"), "--arch", "module:userfa:Net", "--hidden",
        "layers.*", "--method", "fa", "--feedback-attr", "B", "--data", str(SAMPLES / "eval.safetensors"),
        "--max-samples", str(N),
    )  # fmt: skip
    assert [la["cos"] for la in report["layers"]] == pytest.approx(reference_fa(state(), used), abs=2e-5)
    assert report["loading"]["convention"] == "attribute:B"


def test_a_name_that_is_not_an_attribute_is_one_sentence() -> None:
    from fa_audit.settings import AuditSettings

    with pytest.raises(InputError, match="must be an attribute name"):
        AuditSettings(feedback_attr="layers.0.B")
    with pytest.raises(InputError, match="names the layers' own weight"):  # B := W would make FA backprop
        AuditSettings(feedback_attr="weight")


def state() -> dict[str, torch.Tensor]:
    return dict(SAMPLE["state_dict"])


USER_DFA = """
import torch
from torch import nn


class Hook(nn.Module):
    '''Where a DFA network applies e @ B: the identity forward, B kept on the module.'''

    def __init__(self, classes, width):
        super().__init__()
        self.register_buffer("B", torch.zeros(classes, width))

    def forward(self, x):
        return x


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        widths = [24, 64, 64, 64]
        self.layers = nn.ModuleList(nn.Sequential(nn.Linear(w, 64), nn.Tanh(), Hook(10, 64)) for w in widths)
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return self.head(x)
"""


def test_a_dfa_hooks_attribute_is_its_hidden_states_matrix(tmp_path: Path) -> None:
    """For a DFA method the attribute is a hidden module's matrix, [outputs, width]: here on the
    hooks after each block, whose twins are the identity."""
    from .test_conventions import reference_direct

    module = user_module(tmp_path, "userdfa", USER_DFA)
    net = module.Net().eval()
    state = SAMPLE["state_dict"]
    per_hidden = []
    for i, name in enumerate(LAYERS[:-1]):
        with torch.no_grad():
            net.layers[i][0].weight.copy_(state[f"{name}.weight"])
            net.layers[i][0].bias.copy_(state[f"{name}.bias"])
            net.layers[i][2].B.copy_(_rand(10, 64, seed=80 + i))
        per_hidden.append(net.layers[i][2].B.clone())
    with torch.no_grad():
        net.head.weight.copy_(state["head.weight"])
        net.head.bias.copy_(state["head.bias"])
    batches = [(X[i : i + 64].float(), Y[i : i + 64]) for i in range(0, N, 64)]
    report = audit_module(net, batches, method="dfa", hidden=["layers.*.2"], feedback_attr="B", device="cpu")
    assert [la.cos for la in report.measurements.layers] == pytest.approx(reference_direct(state, per_hidden), abs=2e-5)
    assert report.loading["convention"] == "attribute:B"
