"""BioTorch's own layers (``pip install --no-deps biotorch==0.0.16``; skipped when absent):
a tanh MLP built from them is trained a few steps by BioTorch's backward, saved as its
users save it (DataParallel's ``module.`` prefix, a training container), audited with
only --arch, --arch-config and --method, and every layer's Γ compared with the cosine of
BioTorch's own backward against the true gradient."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

from fa_audit import InputError
from fa_audit.measure.reference_check import SETTLED

from .cli_runner import run
from .conftest import SAMPLES, audited_in, user_module
from .user_code import hidden_forward

pytest.importorskip("biotorch.layers.fa_constructor")

CONFIG = {"in_dim": 24, "width": 64, "depth": 4, "num_classes": 10}
N = 256


class BioMLP(nn.Module):
    """The mlp adapter's module names and forward, on BioTorch layers."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        import importlib

        linear = importlib.import_module(f"biotorch.layers.{kind}").Linear
        dims = [24, 64, 64, 64, 64]
        options = {"constrain_weights": False, "gradient_clip": False, "init": "xavier"}
        self.layers = nn.ModuleList(
            linear(a, b, layer_config={"type": kind, "options": dict(options)}) for a, b in pairwise(dims)
        )
        self.head = linear(64, 10, layer_config={"type": kind, "options": dict(options)})

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        hidden = []
        for layer in self.layers:
            x = torch.tanh(layer(x))
            x.retain_grad()
            hidden.append(x)
        return self.head(x), hidden


def _grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    logits, hidden = model(x)
    loss = nn.functional.cross_entropy(logits.double(), y, reduction="sum")  # a float64 loss head
    loss.backward()
    return [h.grad.double() for h in hidden]  # type: ignore[union-attr]


def _true_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    """The same weights in plain nn.Linear layers: the backprop gradient."""
    plain = BioMLP.__new__(BioMLP)
    nn.Module.__init__(plain)
    plain.layers = nn.ModuleList(nn.Linear(m.in_features, m.out_features) for m in model.layers)  # type: ignore[attr-defined]
    plain.head = nn.Linear(64, 10)
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if "backward" not in k})
    return _grads(plain, x, y)


@pytest.mark.parametrize("kind", ["fa", "frsf", "usf"])
def test_biotorch_trained_checkpoint_matches_biotorch_backward(kind: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = BioMLP(kind)
    train = load_file(SAMPLES / "train.safetensors")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    for step in range(5):  # a few steps of BioTorch's own training
        x, y = train["x"][step * 64 : (step + 1) * 64].float(), train["y"][step * 64 : (step + 1) * 64]
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x)[0], y).backward()
        optimizer.step()
    model.train()
    model(train["x"][:1].float())  # usf refreshes weight_backward on each forward, as BioTorch's trainer leaves it
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"epoch": 5, "state_dict": state, "optimizer": optimizer.state_dict()}, tmp_path / "checkpoint.pth.tar")

    code, out, err = run(
        "run", tmp_path / "checkpoint.pth.tar", "--arch", "mlp", "--arch-config", json.dumps(CONFIG),
        "--method", kind, "--data", SAMPLES / "eval.safetensors", "--max-samples", N, "--json", "-",
    )  # fmt: skip
    assert code in (0, 1, 3), err
    report = json.loads(out)

    evaluation = load_file(SAMPLES / "eval.safetensors")
    x, y = evaluation["x"][:N].float(), evaluation["y"][:N]
    credit, true = _grads(model, x, y), _true_grads(model, x, y)
    want = [float(((c * g).sum(1) / (c.norm(dim=1) * g.norm(dim=1))).mean()) for c, g in zip(credit, true, strict=True)]
    assert [layer["cos"] for layer in report["layers"]] == pytest.approx(want, abs=2e-5)


BIONET = '''
import importlib

from torch import nn


class BioNet(nn.Module):
    """BioTorch layers of one mode in the duck-typed interface: embed, blocks.0..2, head."""

    def __init__(self, kind="fa"):
        super().__init__()
        linear = importlib.import_module(f"biotorch.layers.{kind}").Linear
        extra = {"output_dim": 10} if kind == "dfa" else {}

        def layer(n_in, n_out):
            config = {"type": kind, "options": {"constrain_weights": False, "gradient_clip": False, "init": "xavier"}}
            return linear(n_in, n_out, layer_config=config, **extra)

        self.embed = nn.Sequential(layer(24, 64), nn.Tanh())
        self.blocks = nn.ModuleList(nn.Sequential(layer(64, 64), nn.Tanh()) for _ in range(3))
        self.head = layer(64, 10)
''' + hidden_forward()


def _cli_layers(
    folder: Path, monkeypatch: pytest.MonkeyPatch, saved: object, name: str, arch: str, kind: str, data: str
) -> list[dict[str, Any]]:
    """The command line's per-layer JSON for ``saved``, written as ``folder/name`` the way
    BioTorch's users save, and loaded with their own class."""
    torch.save(saved, folder / name)
    monkeypatch.chdir(folder)
    code, out, err = run(
        "run", name, "--arch", arch, "--arch-config", json.dumps({"kind": kind}), "--method", kind,
        "--data", SAMPLES / data, "--max-samples", N, "--json", "-",
    )  # fmt: skip
    assert code in (1, 3), err
    layers: list[dict[str, Any]] = json.loads(out)["layers"]
    return layers


@pytest.mark.parametrize("kind", ["fa", "frsf", "usf", "brsf", "dfa"])
def test_biotorch_layers_in_memory_give_the_cli_numbers(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BioTorch's own layers trained a few steps, audited in memory (through their plain twins,
    the feedback read off their weight_backward) and from the state dict BioTorch saves."""
    import importlib
    import sys

    from fa_audit import audit_module

    (tmp_path / "bionet.py").write_text(BIONET)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("bionet", None)
    torch.manual_seed(0)
    model = importlib.import_module("bionet").BioNet(kind)
    train = load_file(SAMPLES / "train.safetensors")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    for step in range(5):
        x, y = train["x"][step * 64 : (step + 1) * 64].float(), train["y"][step * 64 : (step + 1) * 64]
        optimizer.zero_grad()
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y)
        if kind == "dfa":  # what BioTorch's BioModule does before the backward
            error = torch.autograd.grad(loss, logits, retain_graph=True)[0]
            for layer in model.modules():
                layer.loss_gradient = error
        loss.backward()
        optimizer.step()
    evaluation = load_file(SAMPLES / "eval.safetensors")
    batches = [(evaluation["x"][i : i + 64].float(), evaluation["y"][i : i + 64]) for i in range(0, N, 64)]
    report = audit_module(model, batches, method=kind, device="cpu")
    layers = report.measurements.layers
    assert all(la.refused is None and la.grad_check is not None and la.grad_check < SETTLED for la in layers)
    wrong = "usf" if kind == "fa" else "fa"  # each layer's layer_config says its mode: another is one sentence
    with pytest.raises(InputError, match=rf"biotorch modules train it with '{kind}'.*but method='{wrong}' was given"):
        audit_module(model, batches, method=wrong, device="cpu")

    saved = {"state_dict": model.state_dict(), "epoch": 5}
    cli = _cli_layers(tmp_path, monkeypatch, saved, "bio.pth.tar", "module:bionet:BioNet", kind, "eval.safetensors")
    assert [la["cos"] for la in cli] == pytest.approx([la.cos for la in layers], abs=1e-6)
    assert [la["g_norm"] for la in cli] == pytest.approx([la.g_norm for la in layers], rel=1e-6)
    if kind == "fa":  # and both are BioTorch's own backward against the true gradient
        x, y = evaluation["x"][:N].double(), evaluation["y"][:N]
        net = __import__("copy").deepcopy(model).double().eval()
        logits, hidden = net(x, return_hidden=True)
        for h in hidden:
            h.retain_grad()
        nn.functional.cross_entropy(logits, y, reduction="sum").backward()
        state = {k: v.double() for k, v in model.state_dict().items()}
        h_true, true_hidden = x.clone().requires_grad_(), []
        for name in ["embed.0", "blocks.0.0", "blocks.1.0", "blocks.2.0"]:
            h_true = torch.tanh(h_true @ state[f"{name}.weight"].T + state[f"{name}.bias"])
            true_hidden.append(h_true)
        true_logits = h_true @ state["head.weight"].T + state["head.bias"]
        true = torch.autograd.grad(nn.functional.cross_entropy(true_logits, y, reduction="sum"), true_hidden)
        want = [
            float(((h.grad * g).sum(1) / (h.grad.norm(dim=1) * g.norm(dim=1))).mean())
            for h, g in zip(hidden, true, strict=True)
        ]  # type: ignore[union-attr]
        assert [la.cos for la in layers] == pytest.approx(want, abs=2e-5)


BIOCNN = '''
import importlib

import torch
from torch import nn


class BioCNN(nn.Module):
    """BioTorch convolutions of one mode ("plain": torch's own), then a BioTorch Linear head."""

    def __init__(self, kind="fa"):
        super().__init__()
        lib = nn if kind == "plain" else importlib.import_module(f"biotorch.layers.{kind}")
        extra = {"output_dim": 10} if kind == "dfa" else {}
        config = {} if kind == "plain" else {"layer_config": {"type": kind, "options": {
            "constrain_weights": False, "gradient_clip": False, "init": "xavier"}}}

        def conv(c_in, c_out, stride):
            if kind == "dfa":
                return lib.Conv2d(c_in, c_out, 10, 3, stride=stride, padding=1, **config)
            return lib.Conv2d(c_in, c_out, 3, stride=stride, padding=1, **config)

        self.embed = nn.Sequential(conv(1, 6, 1), nn.Tanh())
        self.blocks = nn.ModuleList([nn.Sequential(conv(6, 6, 1), nn.Tanh()), nn.Sequential(conv(6, 6, 2), nn.Tanh())])
        self.head = lib.Linear(6 * 4 * 4, 10, **config, **extra)
''' + hidden_forward(flatten=True)


@pytest.mark.parametrize("kind", ["fa", "dfa"])
def test_biotorch_convolutions_in_memory_are_biotorchs_own_credit(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BioTorch's Conv2d (fa: its autograd Function; dfa: its backward hook and conv2d_input of
    the error) audited in memory: every Γ is the cosine of BioTorch's own backward against
    the true gradient of the same weights in torch's plain layers, and the command line
    gives the same numbers from the state dict BioTorch saves."""
    import importlib

    from fa_audit import audit_module

    (tmp_path / "biocnn.py").write_text(BIOCNN)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("biocnn")
    torch.manual_seed(0)
    model = module.BioCNN(kind)
    data = load_file(SAMPLES / "images_eval.safetensors")
    x, y = data["x"][:N].float(), data["y"][:N]
    report = audit_module(model, [(x[i : i + 64], y[i : i + 64]) for i in range(0, N, 64)], method=kind, device="cpu")
    layers = report.measurements.layers
    assert all(la.refused is None and la.grad_check is not None and la.grad_check < SETTLED for la in layers)

    net = __import__("copy").deepcopy(model).double().eval()
    logits, hidden = net(x.double(), return_hidden=True)
    for h in hidden:
        h.retain_grad()
    if kind == "dfa":  # what BioTorch's BioModule does before the backward
        error = torch.autograd.grad(nn.functional.cross_entropy(logits, y, reduction="sum"), logits, retain_graph=True)
        for layer in net.modules():
            layer.loss_gradient = error[0]
    nn.functional.cross_entropy(logits, y, reduction="sum").backward()
    plain = module.BioCNN("plain").double()
    plain.load_state_dict({k: v for k, v in net.state_dict().items() if "backward" not in k})
    true_logits, true_hidden = plain(x.double(), return_hidden=True)
    true = torch.autograd.grad(nn.functional.cross_entropy(true_logits, y, reduction="sum"), true_hidden)
    own = [h.grad.flatten(1) for h in hidden]  # type: ignore[union-attr]
    flat = [g.flatten(1) for g in true]
    want = [float(((c * g).sum(1) / (c.norm(dim=1) * g.norm(dim=1))).mean()) for c, g in zip(own, flat, strict=True)]
    assert [la.cos for la in layers] == pytest.approx(want, abs=2e-5)
    assert max(abs(c) for c in want) < 0.9  # BioTorch's credit, not the 1.0 of the credit against itself

    cli = _cli_layers(
        tmp_path, monkeypatch, model.state_dict(), "cnn.pt", "module:biocnn:BioCNN", kind, "images_eval.safetensors"
    )
    assert [la["cos"] for la in cli] == pytest.approx([la.cos for la in layers], abs=1e-6)


def test_biotorchs_own_lenet_cifar_is_audited_not_refused() -> None:
    """BioTorch's model zoo: LeNet-CIFAR converted by its BioModule (the fa_constructor
    layers), ReLU then max-pool. Its dead units feeding a max-pool are ties where autograd
    takes one side; the reference proof leaves h's zeros alone, so the audit goes through
    the plain twins instead of refusing (it missed by 39 % before)."""
    from biotorch.module.biomodule import BioModule

    from fa_audit import audit_module

    le_net = _zoo("le_net")
    torch.manual_seed(0)
    model = BioModule(le_net.le_net_cifar(), mode="fa", copy_weights=False, output_dim=10)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(128, 3, 32, 32, generator=g), torch.randint(0, 10, (128,), generator=g)  # CIFAR-shaped
    hidden = ["module.relu1", "module.relu2", "module.relu3", "module.relu4"]
    report = audit_module(model, [(x, y)], method="fa", hidden=hidden, device="cpu")
    layers = report.measurements.layers
    assert [la.module for la in layers] == hidden
    assert all(la.refused is None and la.grad_check is not None and la.grad_check < SETTLED for la in layers)
    assert any("plain twins" in note for note in report.notes)


def test_biotorchs_dfa_lenet_credit_at_its_relu_states_is_its_own() -> None:
    """BioTorch's DFA layers apply their matrix at their own input: conv2 reads pool1's output, not
    relu1's, and fc1 reads relu3 through a functional avg_pool2d. The walk carries each projection
    back through the pooling's true Jacobian, so the ReLU states get BioTorch's own credit (they
    were refused, with a note naming the pool to audit instead)."""
    from biotorch.module.biomodule import BioModule

    from fa_audit import audit_module

    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(128, 3, 32, 32, generator=g), torch.randint(0, 10, (128,), generator=g)
    torch.manual_seed(0)
    model = BioModule(_zoo("le_net").le_net_cifar(), mode="dfa", copy_weights=False, output_dim=10).eval()
    hidden = ["module.relu1", "module.relu2", "module.relu3", "module.relu4"]
    layers = audit_module(model, [(x, y)], method="dfa", hidden=hidden, device="cpu").measurements.layers
    assert all(la.refused is None and la.grad_check is not None and la.grad_check < SETTLED for la in layers)
    assert [la.cos for la in layers] == pytest.approx(_own_cosines(model, hidden, x, y), abs=2e-5)


def _zoo(name: str) -> Any:
    """biotorch/models/<name>.py loaded by path: the biotorch.models package imports torchvision."""
    import importlib.util
    import os

    import biotorch

    spec = importlib.util.spec_from_file_location(f"bt_{name}", os.path.join(biotorch.__path__[0], f"models/{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_biotorchs_usf_resnet_weighs_its_paths_by_biotorchs_scale() -> None:
    """uSF's B is s_l · sign(W) with s_l each layer's initialisation scale. In a chain the scales
    cancel; at a residual add they weigh the block against the shortcut, and Γ taken with the
    scale left out was 0.005 where BioTorch's own backward gives 0.49 (ResNet-20 from its model
    zoo, layer1). The audit reads s_l from the B BioTorch stores."""
    from fa_audit import audit_module

    model, x, y = _zoo_resnet("usf")
    report = audit_module(model, [(x, y)], method="usf", hidden=RESNET_STAGES, device="cpu")
    want = _own_cosines(model, RESNET_STAGES, x, y)
    assert want[0] > 0.3  # the shortcut carries much of the credit: far from a scale-free B's ≈ 0
    assert [la.cos for la in report.measurements.layers] == pytest.approx(want, abs=2e-5)


RESNET_STAGES = ["module.layer1", "module.layer2", "module.layer3"]


def _zoo_resnet(mode: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """BioTorch's zoo ResNet-20 in ``mode`` at its seeded initialisation, and 64 CIFAR-shaped samples."""
    from biotorch.module.biomodule import BioModule

    torch.manual_seed(0)
    model = BioModule(_zoo("small_resnet").resnet20(num_classes=10), mode=mode, copy_weights=False, output_dim=10)
    g = torch.Generator().manual_seed(1)
    return model.eval(), torch.randn(64, 3, 32, 32, generator=g), torch.randint(0, 10, (64,), generator=g)


def _own_cosines(model: nn.Module, hidden: list[str], x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """Γ per hidden module of BioTorch's own backward against backprop's, in float64; a DFA
    model first gets the batch's loss gradient, as BioModule gives it before its backward."""
    import copy

    own = copy.deepcopy(model).double()
    logits = own(x.double())
    error = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), logits)[0]
    for layer in own.modules():
        layer.loss_gradient = error
    credit = _hidden_grads(own, hidden, x.double(), y)
    true = _hidden_grads(_backprop_twin(model), hidden, x.double(), y)
    return [float(((c * t).sum(1) / (c.norm(dim=1) * t.norm(dim=1))).mean()) for c, t in zip(credit, true, strict=True)]


def _hidden_grads(model: nn.Module, hidden: list[str], x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    """The gradient the model's own backward gives at each hidden module's output (float64 loss)."""
    store: dict[str, torch.Tensor] = {}
    keep = [lambda m, a, o, h=h: store.__setitem__(h, o) for h in hidden]
    handles = [model.get_submodule(h).register_forward_hook(k) for h, k in zip(hidden, keep, strict=True)]
    logits = model(x)
    for handle in handles:
        handle.remove()
    loss = F.cross_entropy(logits.double(), y, reduction="sum")
    return [t.flatten(1) for t in torch.autograd.grad(loss, [store[h] for h in hidden])]


def test_biotorchs_dfa_resnet_credit_sums_what_its_shortcuts_carry_back() -> None:
    """BioTorch's DFA replaces each layer's input gradient by e·B, and a residual stage's output
    also reaches the loss along the shortcut, carrying the later layers' projections back: its
    credit is that sum, which the layer-wise DFA walk computes. Taken as the one e·B of the layer
    reading it, Γ was −0.013 and 0.017 where BioTorch's own backward gives 0.012 and 0.092 (its
    zoo's ResNet-20, trained 6 steps); here every Γ is BioTorch's own, in float64."""
    from fa_audit import audit_module

    model, x, y = _zoo_resnet("dfa")
    report = audit_module(model, [(x, y)], method="dfa", hidden=RESNET_STAGES, device="cpu")
    assert report.method == "dfa_layers" and any("audited as dfa_layers" in n for n in report.notes)
    want = _own_cosines(model, RESNET_STAGES, x, y)
    assert [la.cos for la in report.measurements.layers] == pytest.approx(want, abs=2e-5)
    assert max(abs(w) for w in want) < 0.9


def _backprop_twin(model: nn.Module) -> nn.Module:
    """A float64 copy whose BioTorch layers compute torch's own forward and backward."""
    import copy

    plain = copy.deepcopy(model).double()
    for layer in plain.modules():
        if isinstance(layer, nn.Conv2d | nn.Linear) and hasattr(layer, "weight_backward"):
            layer._backward_hooks.clear()
            own = nn.Conv2d.forward if isinstance(layer, nn.Conv2d) else nn.Linear.forward  # torch's: backprop
            layer.forward = own.__get__(layer)
    return plain


BTNET = """
import importlib.util
import os

import biotorch
from biotorch.module.biomodule import BioModule

_spec = importlib.util.spec_from_file_location("bt_le_net", os.path.join(biotorch.__path__[0], "models/le_net.py"))
_le_net = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_le_net)


def lenet():
    return BioModule(_le_net.le_net_cifar(), mode="dfa", copy_weights=False, output_dim=10)
"""


def test_biotorchs_cached_training_error_in_a_resaved_file_is_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BioTorch's DFA sets ``loss_gradient`` (the batch's error) on every module at each training
    forward; the re-save line fa-audit prints for a pickled model keeps plain tensor attributes (a
    B set as self.B), so the file holds 80 such entries on a ResNet-20. They are not weights: read
    and left out, with a note, where they were "state_dict has … which the module does not"."""
    module = user_module(tmp_path, "btnet", BTNET)
    torch.manual_seed(0)
    model = module.lenet()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(128, 3, 32, 32, generator=g), torch.randint(0, 10, (128,), generator=g)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(2):  # BioTorch's DFA training: the forward takes the targets and the loss
        optimizer.zero_grad()
        F.cross_entropy(model(x[:64], y[:64], F.cross_entropy), y[:64]).backward()
        optimizer.step()
    model.eval()
    state = model.state_dict()  # what the printed re-save line keeps
    state.update({(n + "." + a).lstrip("."): v for n, k in model.named_modules() for a, v in vars(k).items()
                  if isinstance(v, torch.Tensor)})  # fmt: skip
    assert sum(k.endswith("loss_gradient") for k in state) > 5
    torch.save(state, tmp_path / "lenet.state_dict.pt")
    save_file({"x": x[64:].contiguous(), "y": y[64:].contiguous()}, str(tmp_path / "eval.safetensors"))
    hidden = ["--hidden", "module.pool1", "--hidden", "module.pool2"]
    report = audited_in(tmp_path, monkeypatch, "lenet.state_dict.pt", "--arch", "module:btnet:lenet",
                        "--method", "dfa", *hidden, "--data", "eval.safetensors")  # fmt: skip
    assert all(layer["cos"] is not None for layer in report["layers"])
    assert any("loss_gradient entries (a batch's error BioTorch keeps) are not used" in n for n in report["notes"])


def test_biotorchs_dfa_on_a_per_position_linear_is_one_sentence() -> None:
    """BioTorch's DFA hook sends e·B, one row per sample, to a Linear's input; a Linear that reads
    [n, T, d] has no such form (BioTorch's own hook fails on it in training): an InputError naming
    the layer, not a reshape error. A first layer reading the input itself sends nothing back, as
    in BioTorch, and is fine."""
    from biotorch.layers.dfa import Linear

    from fa_audit import InputError, audit_module

    options = {"type": "dfa", "options": {"constrain_weights": False, "gradient_clip": False, "init": "xavier"}}

    class PerPosition(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.first = Linear(8, 8, output_dim=3, layer_config=dict(options))
            self.second = Linear(8, 8, output_dim=3, layer_config=dict(options))
            self.head = Linear(8, 3, output_dim=3, layer_config=dict(options))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.tanh(self.second(torch.tanh(self.first(x))))  # [n, T, 8]
            out: torch.Tensor = self.head(h.mean(1))
            return out

    torch.manual_seed(0)
    model = PerPosition().eval()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 5, 8, generator=g), torch.randint(0, 3, (16,), generator=g)
    with pytest.raises(InputError, match="but second reads \\[16, 5, 8\\] \\(positions per sample\\)"):
        audit_module(model, [(x, y)], method="dfa", hidden=["first", "second"], device="cpu")
    report = audit_module(model, [(x, y)], method="dfa", hidden=["second"], device="cpu")  # no credit sent below
    assert report.measurements.layers[0].cos is not None
