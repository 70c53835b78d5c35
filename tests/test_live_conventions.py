"""Each library's live layers, audited in memory, give the numbers the command line gives on
the state dict that library saves: the DRTP code's FA wrapper and training hooks, the
sign-symmetry code's layers and TinyDFA's feedback points, rebuilt here from their source
(BioTorch's own layers are in test_biotorch.py). The FA-family credit also equals each
library's own backward in float64, and TinyDFA's is read off the matrix its DFA module
drew, with no saved file."""

from __future__ import annotations

import copy
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.nn import functional as F

from fa_audit import ExitCode, InputError, audit_module
from fa_audit.measure.reference_check import SETTLED

from .cli_runner import run
from .conftest import SAMPLES, user_module
from .user_code import FA_LINEAR_FUNCTION, hidden_forward, module_fixture

LIVE = (
    '''
import torch
from torch import nn


class _Identity(torch.autograd.Function):
    """A training hook's Function: the identity forward, the projection of the target back."""

    @staticmethod
    def forward(ctx, x, b):
        ctx.save_for_backward(b)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        (b,) = ctx.saved_tensors
        return grad * 0 + (grad @ b.T @ b) / b.shape[1], None


class FA_wrapper(nn.Module):
    """The DRTP code's FA wrapper: tensor hooks send the error back through B."""

    def __init__(self, module, dim):
        super().__init__()
        self.module = module
        self.output_grad = None
        self.fixed_fb_weights = nn.Parameter(torch.randn(dim) * 0.2, requires_grad=False)

    def forward(self, x):
        if x.requires_grad:
            x.register_hook(self.pre)
            x = self.module(x)
            x.register_hook(self.post)
            return x
        return self.module(x)

    def pre(self, grad):
        return self.output_grad.mm(self.fixed_fb_weights) if self.output_grad is not None else grad

    def post(self, grad):
        self.output_grad = grad
        return grad


class TrainingHook(nn.Module):
    def __init__(self, dim_hook, train_mode):
        super().__init__()
        self.train_mode = train_mode
        if train_mode == "DFA":
            self.fixed_fb_weights = nn.Parameter(torch.randn(dim_hook) * 0.2, requires_grad=False)
        else:  # FA is the wrapper's work
            self.fixed_fb_weights = None

    def forward(self, x, labels=None, y=None):  # FC_block passes the labels and the output buffer
        return x if self.fixed_fb_weights is None else _Identity.apply(x, self.fixed_fb_weights)


class FC_block(nn.Module):
    """The DRTP code's block: fc (an FA_wrapper in FA mode), its activation, its hook."""

    def __init__(self, n_in, n_out, train_mode):
        super().__init__()
        self.fc = nn.Linear(n_in, n_out)
        if train_mode == "FA":
            self.fc = FA_wrapper(self.fc, (n_out, n_in))
        self.act = nn.Tanh()
        self.hook = TrainingHook((10, n_out), train_mode)

    def forward(self, x, labels=None, y=None):
        return self.hook(self.act(self.fc(x)), labels, y)


class AsymmetricFeedbackLinear(nn.Linear):
    """The sign-symmetry code's layer, algo 'feedback_alignment'."""

    def __init__(self, n_in, n_out):
        super().__init__(n_in, n_out)
        self.algo = "feedback_alignment"
        self.register_buffer("feedback_weight", torch.empty(n_out, n_in).uniform_(-n_in**-0.5, n_in**-0.5))

    def forward(self, x):
        return FALinearFunction.apply(x, self.weight, self.feedback_weight, self.bias)

'''
    + FA_LINEAR_FUNCTION
    + '''

class DFALayer(nn.Module):
    """TinyDFA's feedback point: the graph is cut, the DFA module's Function sends e·M here."""

    def __init__(self):
        super().__init__()
        self.feedback_registrar, self.feedback_points = None, None

    def forward(self, x):
        self.feedback_points = x
        out = x.detach()
        out.requires_grad = True
        return out


class DFA(nn.Module):
    def __init__(self, dfa_layers):
        super().__init__()
        self.dfa_layers = dfa_layers
        self.feedback_matrix = None

    def forward(self, x):
        if self.feedback_matrix is None:
            self.feedback_matrix = torch.rand(x.shape[1], 80) * 2 - 1
        return x


class Net(nn.Module):
    """embed, blocks.0..2 (tanh after each), head: the duck-typed interface."""

    def __init__(self, kind="weight_fa"):
        super().__init__()
        self.kind = kind
        self.embed = self.block(24, 64)
        self.blocks = nn.ModuleList(self.block(64, 64) for _ in range(3))
        self.head = self.layer(64, 10)
        if kind == "tinydfa":
            self.dfa = DFA([m for m in self.modules() if isinstance(m, DFALayer)])

    def block(self, n_in, n_out):
        if self.kind.startswith("drtp"):
            return FC_block(n_in, n_out, "FA" if self.kind == "drtp_fa" else "DFA")
        if self.kind == "tinydfa":
            return nn.Sequential(nn.Linear(n_in, n_out), nn.Tanh(), DFALayer())
        return nn.Sequential(self.layer(n_in, n_out), nn.Tanh())

    def layer(self, n_in, n_out):
        if self.kind == "drtp_fa":
            return FA_wrapper(nn.Linear(n_in, n_out), (n_out, n_in))
        if self.kind == "sign_symmetry_code":
            return AsymmetricFeedbackLinear(n_in, n_out)
        return nn.Linear(n_in, n_out)

    def forward(self, x, return_hidden=False):
        h = self.embed(x)
        hidden = [h]
        for block in self.blocks:
            h = block(h)
            hidden.append(h)
        logits = self.head(h)
        if self.kind == "tinydfa":
            logits = self.dfa(logits)
        return (logits, hidden) if return_hidden else logits

'''
)
N = 256
CASES = {"drtp_fa": "fa", "sign_symmetry_code": "fa", "drtp_dfa": "dfa", "tinydfa": "dfa"}  # kind: method


live = module_fixture("livenets", LIVE)


def _batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    data = load_file(SAMPLES / "eval.safetensors")
    x, y = data["x"][:N].float(), data["y"][:N]
    return [(x[i : i + 64], y[i : i + 64]) for i in range(0, N, 64)]


def _cli(folder: Path, monkeypatch: pytest.MonkeyPatch, *args: object) -> dict[str, object]:
    monkeypatch.chdir(folder)
    code, out, err = run(
        *args, "--data", SAMPLES / "eval.safetensors", "--max-samples", N, "--device", "cpu", "--json", "-"
    )
    assert code in (1, 3), err
    report: dict[str, object] = json.loads(out)
    return report


def _eval64() -> tuple[torch.Tensor, torch.Tensor]:
    data = load_file(SAMPLES / "eval.safetensors")
    return data["x"][:N].double(), data["y"][:N]


def _true_gradient(model: nn.Module) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The true gradient at each h_l, and e, from the model's weights in plain float64 algebra."""
    x, y = _eval64()
    first = [getattr(b, "fc", None) or b[0] for b in (model.embed, *model.blocks)]
    plain = [getattr(m, "module", m) for m in (*first, model.head)]
    h, hidden = x.clone().requires_grad_(), []
    for layer in plain[:-1]:
        h = torch.tanh(h @ layer.weight.detach().double().T + layer.bias.detach().double())
        hidden.append(h)
    logits = h @ plain[-1].weight.detach().double().T + plain[-1].bias.detach().double()
    true = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), hidden)
    return list(true), (logits.softmax(-1) - F.one_hot(y, 10).double()).detach()


def _mean_cos(credit: torch.Tensor, g: torch.Tensor) -> float:
    return float(((credit * g).sum(1) / (credit.norm(dim=1) * g.norm(dim=1))).mean())


def _own_backward_cosines(model: nn.Module) -> list[float]:
    """Γ of the library's own backward (float64) against the true gradient at each h_l."""
    x, y = _eval64()
    logits, hidden = copy.deepcopy(model).double()(x, return_hidden=True)
    for h in hidden:
        h.retain_grad()  # after the library's tensor hooks, as its training sees the gradient
    F.cross_entropy(logits, y, reduction="sum").backward()
    credit = [h.grad for h in hidden]
    return [_mean_cos(c, g) for c, g in zip(credit, _true_gradient(model)[0], strict=True)]


@pytest.mark.parametrize("kind", CASES)
def test_live_layers_give_the_cli_numbers_on_their_saved_state_dict(
    kind: str, live: tuple[Path, ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, module = live
    torch.manual_seed(0)
    model = module.Net(kind)
    model(torch.zeros(2, 24))  # TinyDFA draws its matrix at the first forward
    method = CASES[kind]
    report = audit_module(model, _batches(), method=method, device="cpu")
    layers = report.measurements.layers
    assert all(la.refused is None and la.grad_check is not None and la.grad_check < SETTLED for la in layers)
    assert any("plain twins" in note for note in report.notes)
    if method == "fa":  # the library's own backward, in float64, against the true gradient
        assert [la.cos for la in layers] == pytest.approx(_own_backward_cosines(model), abs=2e-5)
    if kind == "tinydfa":  # in memory, from the matrix on the DFA module: e · M[:, :64] / sqrt(80)
        true, e = _true_gradient(model)
        credit = e @ model.dfa.feedback_matrix.double()[:, :64] / math.sqrt(80)
        assert [la.cos for la in layers] == pytest.approx([_mean_cos(credit, g) for g in true], abs=2e-5)
        return  # TinyDFA never saves its matrix: nothing for the command line to read
    torch.save(model.state_dict(), folder / f"{kind}.pt")
    cli = _cli(folder, monkeypatch, "run", f"{kind}.pt", "--arch", "module:livenets:Net", "--arch-config",
               json.dumps({"kind": kind}), "--method", method)  # fmt: skip
    assert [la["cos"] for la in cli["layers"]] == pytest.approx([la.cos for la in layers], abs=1e-6)  # type: ignore[index]
    assert [la["g_norm"] for la in cli["layers"]] == pytest.approx([la.g_norm for la in layers], rel=1e-6)  # type: ignore[index]


def test_a_submodule_wrapped_in_dataparallel_loads_as_the_sign_symmetry_code_saves_it(
    live: tuple[Path, ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sign-symmetry code's train.py (after the PyTorch ImageNet example) wraps an AlexNet's
    ``features`` alone in DataParallel: its keys read ``features.module.0.weight``, feedback included.
    The DRTP code's own ``FA_wrapper.module`` (these nets' ``embed.fc.module``) keeps its name. A block
    compiled alone leaves torch.compile's ``_orig_mod`` inside the keys, taken out alike."""
    folder, module = live
    args = ("--arch", "module:livenets:Net", "--method", "fa", "--arch-config")
    cosines = {}
    for kind in ("sign_symmetry_code", "drtp_fa"):
        torch.manual_seed(0)
        model = module.Net(kind)
        torch.save(model.state_dict(), folder / f"{kind}.pt")
        model.blocks = nn.DataParallel(model.blocks)
        state = model.state_dict()
        inner = {"sign_symmetry_code": "0.0.feedback_weight", "drtp_fa": "0.fc.module.weight"}[kind]
        assert f"blocks.module.{inner}" in state
        torch.save({"epoch": 1, "arch": "alexnet", "state_dict": state, "best_prec1": 0.0}, folder / f"{kind}.tar")
        plain = _cli(folder, monkeypatch, "run", f"{kind}.pt", *args, json.dumps({"kind": kind}))
        wrapped = _cli(folder, monkeypatch, "run", f"{kind}.tar", *args, json.dumps({"kind": kind}))
        assert [la["cos"] for la in wrapped["layers"]] == [la["cos"] for la in plain["layers"]]  # type: ignore[index]
        assert wrapped["loading"]["wrappers_removed"] == ["module"]  # type: ignore[index]
        assert "wrappers_removed" not in plain["loading"]  # type: ignore[operator]
        cosines[kind] = [la["cos"] for la in plain["layers"]]  # type: ignore[index]
    torch.manual_seed(0)
    model = module.Net("sign_symmetry_code")
    model.blocks[1] = torch.compile(model.blocks[1])  # a block compiled alone: blocks.1._orig_mod.0.weight
    torch.save(model.state_dict(), folder / "compiled.pt")
    compiled = _cli(folder, monkeypatch, "run", "compiled.pt", *args, json.dumps({"kind": "sign_symmetry_code"}))
    assert [la["cos"] for la in compiled["layers"]] == cosines["sign_symmetry_code"]  # type: ignore[index]
    assert compiled["loading"]["wrappers_removed"] == ["_orig_mod"]  # type: ignore[index]


DKP = '''
import torch
from torch import nn


class _Store(torch.autograd.Function):
    """At the logits: keeps the output error for the DFA modules, passes it on unchanged."""

    @staticmethod
    def forward(ctx, x, store):
        ctx.store = store
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        ctx.store["e"] = grad
        return grad, None


class _Project(torch.autograd.Function):
    """After a layer: the gradient there replaced by e · B (DFA; DKP also trains B)."""

    @staticmethod
    def forward(ctx, x, b, store):
        ctx.b, ctx.store = b, store
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return ctx.store["e"] @ ctx.b, None, None


class DFAHook(nn.Module):
    def __init__(self, classes, width, store):
        super().__init__()
        self.backward_weights = nn.Parameter(torch.randn(classes, width) / classes**0.5)
        self.store = store

    def forward(self, x):
        return _Project.apply(x, self.backward_weights, self.store)


class Top(nn.Module):
    def __init__(self, store):
        super().__init__()
        self.store = store

    def forward(self, x):
        return _Store.apply(x, self.store)


class Net(nn.Module):
    """The DKP gist's layout: <layer>_dfa after each hidden layer, the error kept at the top."""

    def __init__(self):
        super().__init__()
        store = {}
        self.fc1, self.fc1_dfa = nn.Linear(24, 64), DFAHook(10, 64, store)
        self.fc2, self.fc2_dfa = nn.Linear(64, 64), DFAHook(10, 64, store)
        self.out, self.top = nn.Linear(64, 10), Top(store)

    def forward(self, x):
        h = torch.tanh(self.fc1_dfa(self.fc1(x)))
        h = torch.tanh(self.fc2_dfa(self.fc2(h)))
        return self.top(self.out(h))
'''


@pytest.mark.parametrize(
    ("kind", "wrong"),
    [("drtp_dfa", "sdfa"), ("drtp_dfa", "drtp"), ("drtp_fa", "dfa"), ("sign_symmetry_code", "sign_symmetry")],
)
def test_a_live_model_says_how_it_trains(kind: str, wrong: str, live: tuple[Path, ModuleType]) -> None:
    """The DRTP code's hooks keep their train_mode, the sign-symmetry code's layers their algo: another
    method's credit is refused in one sentence (their files do not say, so there --method stands)."""
    _, module = live
    trained = CASES[kind]
    with pytest.raises(InputError, match=rf"train it with '{trained}', but method='{wrong}' was given.*'{trained}'"):
        audit_module(module.Net(kind), _batches(), method=wrong, device="cpu")


def test_a_live_dkp_model_is_audited_through_its_twin(tmp_path: Path) -> None:
    """The DKP gist's DFA modules are made identities, B read from them: Γ is e·B against
    the true gradient at each layer's output, computed here in float64 from the weights."""
    module = user_module(tmp_path, "dkpnet", DKP)
    torch.manual_seed(1)
    model = module.Net()
    report = audit_module(model, _batches(), method="dfa", hidden=["fc1", "fc2"], device="cpu")
    sys.modules.pop("dkpnet", None)
    layers = report.measurements.layers
    assert all(la.grad_check is not None and la.grad_check < SETTLED for la in layers)
    x, y = _eval64()
    p = {k: v.detach().double() for k, v in model.state_dict().items()}
    a1 = (x @ p["fc1.weight"].T + p["fc1.bias"]).requires_grad_()
    a2 = (torch.tanh(a1) @ p["fc2.weight"].T + p["fc2.bias"]).requires_grad_()
    logits = torch.tanh(a2) @ p["out.weight"].T + p["out.bias"]
    true = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), [a1, a2])
    e = logits.detach().softmax(-1) - F.one_hot(y, 10).double()
    expected = [_mean_cos(e @ p[f"fc{i}_dfa.backward_weights"], g) for i, g in ((1, true[0]), (2, true[1]))]
    assert [la.cos for la in layers] == pytest.approx(expected, abs=2e-5)
    assert max(abs(c) for c in expected) < 0.5  # untrained: DFA's Γ, not the 1.0 of the credit against itself


DKP_GIST = DKP.replace(
    """        self.fc1, self.fc1_dfa = nn.Linear(24, 64), DFAHook(10, 64, store)
        self.fc2, self.fc2_dfa = nn.Linear(64, 64), DFAHook(10, 64, store)
        self.out, self.top = nn.Linear(64, 10), Top(store)

    def forward(self, x):
        h = torch.tanh(self.fc1_dfa(self.fc1(x)))
        h = torch.tanh(self.fc2_dfa(self.fc2(h)))
        return self.top(self.out(h))""",
    """        self.fc1, self.fc1_bn, self.fc1_dfa = nn.Linear(24, 64), nn.BatchNorm1d(64), DFAHook(10, 64, store)
        self.fc2, self.fc2_dfa = nn.Linear(64, 64), DFAHook(10, 64, store)
        self.out, self.top = nn.Linear(64, 10), Top(store)

    def forward(self, x):  # the gist's order: layer, BatchNorm, ReLU, then the hook
        h = self.fc1_dfa(torch.relu(self.fc1_bn(self.fc1(x))))
        h = self.fc2_dfa(torch.relu(self.fc2(h)))
        return self.top(self.out(h))""",
)


def test_a_dkp_hook_after_batchnorm_and_relu_is_where_its_credit_is_audited(tmp_path: Path) -> None:
    """The DKP gist applies e · B after BatchNorm and ReLU: that tensor, not the output of the
    layer the hook is named after, is where Γ compares the credit with the gradient (attached to the
    layer's output instead, Γ was 0.065 off on the gist's own nets)."""
    module = user_module(tmp_path, "dkpgist", DKP_GIST)
    torch.manual_seed(1)
    model = module.Net().eval()
    with torch.no_grad():
        model.fc1_bn.running_mean.normal_(0, 0.3)
        model.fc1_bn.running_var.uniform_(0.5, 2.0)
    report = audit_module(model, _batches(), method="dfa", hidden=["fc1", "fc2"], device="cpu")
    sys.modules.pop("dkpgist", None)
    assert [layer.module for layer in report.measurements.layers] == ["fc1_dfa", "fc2_dfa"]
    assert any("fc1 → fc1_dfa" in note for note in report.notes)
    x, y = _eval64()
    p = {k: v.detach().double() for k, v in model.state_dict().items()}
    z1 = (x @ p["fc1.weight"].T + p["fc1.bias"]).requires_grad_()
    bn = ((z1 - p["fc1_bn.running_mean"]) / (p["fc1_bn.running_var"] + 1e-5).sqrt()) * p["fc1_bn.weight"]
    a1 = torch.relu(bn + p["fc1_bn.bias"])
    a2 = torch.relu(a1 @ p["fc2.weight"].T + p["fc2.bias"])
    logits = a2 @ p["out.weight"].T + p["out.bias"]
    true = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), [a1, a2, z1])
    e = logits.detach().softmax(-1) - F.one_hot(y, 10).double()
    expected = [_mean_cos(e @ p[f"fc{i}_dfa.backward_weights"], g) for i, g in ((1, true[0]), (2, true[1]))]
    assert [la.cos for la in report.measurements.layers] == pytest.approx(expected, abs=2e-5)
    at_layer = _mean_cos(e @ p["fc1_dfa.backward_weights"], true[2])  # where the old mapping put it
    assert abs(at_layer - expected[0]) > 0.01


DRTP_CONV = '''
import torch
from torch import nn


class FA_wrapper(nn.Module):
    """The DRTP code's FA wrapper for conv and fc layers: tensor hooks send the error back
    through B, by conv2d_input with the layer's stride and padding for a convolution."""

    def __init__(self, module, layer_type, dim, stride=None, padding=None):
        super().__init__()
        self.module, self.layer_type, self.stride, self.padding = module, layer_type, stride, padding
        self.output_grad, self.x_shape = None, None
        self.fixed_fb_weights = nn.Parameter(torch.randn(dim) * 0.3, requires_grad=False)

    def forward(self, x):
        if x.requires_grad:
            x.register_hook(self.FA_hook_pre)
            self.x_shape = x.shape
            x = self.module(x)
            x.register_hook(self.FA_hook_post)
            return x
        return self.module(x)

    def FA_hook_pre(self, grad):
        if self.output_grad is None:
            return grad
        if self.layer_type == "fc":
            return self.output_grad.mm(self.fixed_fb_weights)
        return torch.nn.grad.conv2d_input(self.x_shape, self.fixed_fb_weights, self.output_grad,
                                          self.stride, self.padding)

    def FA_hook_post(self, grad):
        self.output_grad = grad
        return grad


class Net(nn.Module):
    """embed, blocks.0..1 (conv then tanh), head: the duck-typed interface."""

    def __init__(self, fa=True):
        super().__init__()

        def conv(c_in, c_out, stride):
            layer = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1)
            return FA_wrapper(layer, "conv", layer.weight.shape, stride, 1) if fa else layer

        self.embed = nn.Sequential(conv(1, 6, 1), nn.Tanh())
        self.blocks = nn.ModuleList([nn.Sequential(conv(6, 6, 1), nn.Tanh()), nn.Sequential(conv(6, 6, 2), nn.Tanh())])
        head = nn.Linear(96, 10)
        self.head = FA_wrapper(head, "fc", head.weight.shape) if fa else head
''' + hidden_forward(flatten=True)


def test_the_drtp_fa_wrapper_on_convolutions_is_its_own_credit(tmp_path: Path) -> None:
    """FA through the DRTP code's wrapped convolutions (conv2d_input with B, stride 2 too),
    audited in memory: Γ is the wrapper's own backward against the true gradient of the same
    weights in plain layers, in float64."""
    module = user_module(tmp_path, "drtpconv", DRTP_CONV)
    torch.manual_seed(0)
    model = module.Net()
    data = load_file(SAMPLES / "images_eval.safetensors")
    x, y = data["x"][:N].float(), data["y"][:N]
    report = audit_module(model, [(x[i : i + 64], y[i : i + 64]) for i in range(0, N, 64)], method="fa", device="cpu")
    layers = report.measurements.layers
    assert all(la.refused is None and la.grad_check is not None and la.grad_check < SETTLED for la in layers)

    net = copy.deepcopy(model).double()
    logits, hidden = net(x.double(), return_hidden=True)
    for h in hidden:
        h.retain_grad()
    F.cross_entropy(logits, y, reduction="sum").backward()
    plain = module.Net(fa=False).double()
    state = {k.replace(".module.", "."): v for k, v in net.state_dict().items() if "fixed_fb" not in k}
    plain.load_state_dict({k.replace("head.module.", "head."): v for k, v in state.items()})
    true_logits, true_hidden = plain(x.double(), return_hidden=True)
    true = torch.autograd.grad(F.cross_entropy(true_logits, y, reduction="sum"), true_hidden)
    own = [_mean_cos(h.grad.flatten(1), g.flatten(1)) for h, g in zip(hidden, true, strict=True)]  # type: ignore[union-attr]
    assert [la.cos for la in layers] == pytest.approx(own, abs=2e-5)
    assert max(abs(c) for c in own) < 0.9
    sys.modules.pop("drtpconv", None)


def test_each_librarys_mode_names_the_method_that_audits_it() -> None:
    """The DRTP code's train_mode, the sign-symmetry code's algo, BioTorch's layer_config["type"]: what
    each says of its network, read only off the libraries' own layers."""
    from torch import nn

    from fa_audit.conventions import CONVENTIONS

    by_name = {c.name: c for c in CONVENTIONS}

    def hook(mode: str) -> nn.Module:
        module = nn.Module()
        module.train_mode, module.fixed_fb_weights = mode, None  # type: ignore[assignment]
        return module

    drtp = by_name["drtp"]
    assert [drtp.trains_with(hook(m)) for m in ("FA", "DFA", "sDFA", "DRTP", "shallow", "BP")] == [
        "fa", "dfa", "sdfa", "drtp", "frozen", None,
    ]  # fmt: skip
    plain = nn.Module()
    plain.train_mode = "DFA"  # type: ignore[assignment]
    assert drtp.trains_with(plain) is None  # not the DRTP code's hook: no fixed_fb_weights
    layer = nn.Linear(3, 2)
    layer.algo = "sham"  # type: ignore[assignment]
    layer.register_buffer("feedback_weight", None)
    assert by_name["sign_symmetry_code"].trains_with(layer) == "bp"
    bio = nn.Linear(3, 2)
    bio.weight_backward = nn.Parameter(torch.zeros(10, 3), requires_grad=False)
    bio.layer_config = {"type": "dfa"}  # type: ignore[assignment]
    assert by_name["biotorch"].trains_with(bio) == "dfa" and by_name["drtp"].trains_with(bio) is None


DRTP_CNN = '''
import torch
from torch import nn


class TrainingHook(nn.Module):
    """The DRTP code's hook (DFA mode): identity forward, B [classes, C, H, W] in the backward."""

    def __init__(self, dim_hook, train_mode):
        super().__init__()
        self.train_mode = train_mode
        self.fixed_fb_weights = None
        if train_mode == "DFA":
            self.fixed_fb_weights = nn.Parameter(torch.randn(dim_hook) * 0.2, requires_grad=False)

    def forward(self, x):
        return x


class CNN_block(nn.Module):
    """As the DRTP code's: conv, activation, hook, then the pool, after the hook."""

    def __init__(self, c_in, c_out, size, train_mode):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, 1, 1)
        self.act = nn.Tanh()
        self.hook = TrainingHook([10, c_out, size, size], train_mode)
        self.pool = nn.MaxPool2d(2, 2)

    def forward(self, x):
        return self.pool(self.hook(self.act(self.conv(x))))


class FC_block(nn.Module):
    def __init__(self, n_in, n_out, train_mode, output=False):
        super().__init__()
        self.fc = nn.Linear(n_in, n_out)
        self.act = nn.Identity() if output else nn.Tanh()
        self.hook = TrainingHook(None if output else [10, n_out], "BP" if output else train_mode)

    def forward(self, x):
        return self.hook(self.act(self.fc(x)))


class Net(nn.Module):
    def __init__(self, train_mode="DFA"):
        super().__init__()
        self.layers = nn.ModuleList([
            CNN_block(1, 4, 8, train_mode), FC_block(4 * 4 * 4, 32, train_mode), FC_block(32, 10, train_mode, True)
        ])

    def forward(self, x):
        x = self.layers[0](x)
        return self.layers[2](self.layers[1](x.flatten(1)))
'''


def test_the_drtp_codes_conv_hook_feeds_the_state_before_its_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The DRTP code's conv block pools after its hook, so its B [classes, C, H, W] is the credit of
    the hook's output: declared as a hidden module (--hidden layers.0.hook), the matrix feeds it, and
    Γ is e·B there against the true gradient of the pre-pool state, in float64."""
    from safetensors.torch import save_file

    module = user_module(tmp_path, "drtpcnn", DRTP_CNN)
    torch.manual_seed(0)
    model = module.Net()
    x, y = torch.randn(N, 1, 8, 8), torch.randint(0, 10, (N,))
    save_file({"x": x, "y": y}, str(tmp_path / "images.safetensors"))
    torch.save(model.state_dict(), tmp_path / "cnn.pt")
    monkeypatch.chdir(tmp_path)
    hidden = ["--hidden", "layers.0.hook", "--hidden", "layers.1.hook"]
    code, out, err = run("run", "cnn.pt", "--arch", "module:drtpcnn:Net", "--method", "dfa", *hidden,
                         "--data", "images.safetensors", "--device", "cpu", "--json", "-")  # fmt: skip
    assert code in (0, 1, 3), err
    report = json.loads(out)
    assert report["loading"]["convention"] == "drtp"

    net = copy.deepcopy(module.Net("BP")).double()
    net.load_state_dict({k: v for k, v in model.state_dict().items() if "fixed_fb_weights" not in k}, strict=False)
    states: list[torch.Tensor] = []
    for hook in (net.layers[0].hook, net.layers[1].hook):
        hook.register_forward_hook(lambda _m, _i, out: states.append(out))
    logits = net(x.double())
    true = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), states)
    e = logits.softmax(-1) - F.one_hot(y, 10).double()
    feedback = [model.layers[i].hook.fixed_fb_weights.double().flatten(1) for i in (0, 1)]
    want = [_mean_cos(e @ b, g.flatten(1)) for b, g in zip(feedback, true, strict=True)]
    assert [la["cos"] for la in report["layers"]] == pytest.approx(want, abs=2e-5)
    blocks = ["--hidden", "layers.0", "--hidden", "layers.1"]  # the conv block's output: after its pool
    code, _, err = run("run", "cnn.pt", "--arch", "module:drtpcnn:Net", "--method", "dfa", *blocks,
                       "--data", "images.safetensors", "--device", "cpu")  # fmt: skip
    assert code == ExitCode.INPUT_ERROR and "pool after the hook" in err and "--hidden layers.0.hook" in err, err
