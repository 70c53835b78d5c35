"""Any nn.Module, its hidden states named by --hidden: a small conv net defined here
(BatchNorm, no return_hidden, not a built-in), trained a few DFA steps, saved as a bare
state dict with a feedback sidecar, audited from the folder that holds its code. Every
layer's Γ and ‖g‖ are checked against a float64 computation written here; FA through a
convolution against a backward written out by hand (conv_transpose2d with B); and
audit_module on the same net in memory gives the CLI's numbers and leaves it untouched."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from torch.nn import functional as F

from fa_audit import ExitCode, audit_module

from .cli_runner import run
from .conftest import user_module

CONVNET = """
from torch import nn


class ConvNet(nn.Module):
    def __init__(self, channels: int = 4, classes: int = 10) -> None:
        super().__init__()
        self.stages = nn.Sequential(
            nn.Sequential(nn.Conv2d(1, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU()),
            nn.Sequential(nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.BatchNorm2d(channels), nn.ReLU()),
        )
        self.head = nn.Linear(channels * 16, classes)

    def forward(self, x):
        return self.head(self.stages(x).flatten(1))
"""
C, N = 4, 256
STAGES = ["stages.0", "stages.1"]


def _images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """8x8 images with spatial structure: class c is a bright 3x3 patch at a position of its own."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    x = torch.randn(n, 1, 8, 8, generator=g) * 0.3
    for i, c in enumerate(y.tolist()):
        r, s = divmod(c, 4)
        x[i, 0, 2 * r : 2 * r + 3, 2 * s : 2 * s + 3] += 1.5
    return x, y


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ModuleType, nn.Module, dict[str, torch.Tensor]]:
    """The folder with convnet.py, its DFA-trained state dict, feedback sidecar and eval data."""
    folder = tmp_path_factory.mktemp("convnet")
    module = user_module(folder, "convnet", CONVNET)
    torch.manual_seed(0)
    model = module.ConvNet(C)
    g = torch.Generator().manual_seed(1)
    feedback = {"stages.0": torch.randn(10, C * 64, generator=g), "stages.1": torch.randn(10, C * 16, generator=g)}
    x, y = _images(512, seed=2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    for step in range(8):  # DFA: each stage by e · B of its output, the head by its true gradient
        xb, yb = x[step * 64 : (step + 1) * 64], y[step * 64 : (step + 1) * 64]
        optimizer.zero_grad()
        h0 = model.stages[0](xb)
        h1 = model.stages[1](h0.detach())
        logits = model.head(h1.detach().flatten(1))
        e = (logits.softmax(-1) - F.one_hot(yb, 10)).detach() / len(yb)
        F.cross_entropy(logits, yb).backward()
        h0.backward((e @ feedback["stages.0"]).view_as(h0))
        h1.backward((e @ feedback["stages.1"]).view_as(h1))
        optimizer.step()
    torch.save(model.state_dict(), folder / "convnet.pt")  # with BatchNorm's int64 num_batches_tracked
    save_file(feedback, folder / "convnet.feedback.safetensors")
    ex, ey = _images(N, seed=3)
    save_file({"x": ex, "y": ey}, folder / "eval.safetensors")
    return folder, module, model, feedback


def _reference(
    model: nn.Module, folder: Path, credit: str, feedback: dict[str, torch.Tensor]
) -> tuple[list[float], list[float]]:
    """Γ and median ‖g‖ per stage, all in float64: DFA's e · B_l, or FA's backward by hand."""
    from safetensors.torch import load_file

    data = load_file(folder / "eval.safetensors")
    net = __import__("copy").deepcopy(model).double().eval()
    x, y = data["x"].double(), data["y"]
    h0 = net.stages[0](x)
    h1 = net.stages[1](h0)
    logits = net.head(h1.flatten(1))
    g0, g1 = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), [h0, h1])
    e = logits.softmax(-1) - F.one_hot(y, 10).double()
    if credit == "dfa":
        c0, c1 = e @ feedback["stages.0"].double(), e @ feedback["stages.1"].double()
    else:
        c1 = (e @ feedback["head"].double()).view_as(h1)
        conv, bn = net.stages[1][0], net.stages[1][1]
        pre = conv(h0)
        delta = c1 * (bn(pre) > 0)  # through ReLU
        delta = delta * (bn.weight / torch.sqrt(bn.running_var + bn.eps)).view(1, -1, 1, 1)  # BatchNorm, eval mode
        c0 = F.conv_transpose2d(delta, feedback["stages.1.0"].double(), stride=2, padding=1, output_padding=1)
    pairs = [(c.detach().flatten(1), g.flatten(1)) for c, g in ((c0, g0), (c1, g1))]
    cos = [float(((c * g).sum(1) / (c.norm(dim=1) * g.norm(dim=1))).mean()) for c, g in pairs]
    return cos, [float(torch.quantile(g.flatten(1).norm(dim=1), 0.5)) for g in (g0, g1)]  # mean of the middle two


def _cli(folder: Path, monkeypatch: pytest.MonkeyPatch, *flags: str) -> dict[str, object]:
    monkeypatch.chdir(folder)  # convnet.py imports from here, as with python -m
    code, out, err = run(
        "run", "convnet.pt", "--arch", "module:convnet:ConvNet", "--arch-config", json.dumps({"channels": C}),
        "--hidden", "stages.*", "--data", "eval.safetensors", "--json", "-", *flags,
    )  # fmt: skip
    assert code in (ExitCode.TRUST, ExitCode.WALK_BACK, ExitCode.INCOMPLETE), err
    report: dict[str, object] = json.loads(out)
    return report


def test_dfa_conv_net_by_hidden_patterns(
    trained: tuple[Path, ModuleType, nn.Module, dict[str, torch.Tensor]], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, _, model, feedback = trained
    report = _cli(folder, monkeypatch, "--method", "dfa")
    cos, g_norm = _reference(model, folder, "dfa", feedback)
    layers = report["layers"]
    assert [la["module"] for la in layers] == STAGES  # type: ignore[index]
    assert [la["cos"] for la in layers] == pytest.approx(cos, abs=2e-5)  # type: ignore[index]
    assert [la["g_norm"] for la in layers] == pytest.approx(g_norm, rel=1e-4)  # type: ignore[index]
    assert report["loading"]["hidden_modules"] == STAGES  # type: ignore[index]
    assert report["loading"]["deep_modules"] == ["stages.1"]  # type: ignore[index]


def test_fa_through_a_convolution_matches_conv_transpose(
    trained: tuple[Path, ModuleType, nn.Module, dict[str, torch.Tensor]], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, _, model, _ = trained
    g = torch.Generator().manual_seed(4)
    shapes = {"stages.0.0": (C, 1, 3, 3), "stages.1.0": (C, C, 3, 3), "head": (10, C * 16)}
    feedback = {name: torch.randn(shape, generator=g) * 0.2 for name, shape in shapes.items()}
    save_file(feedback, folder / "fa.feedback.safetensors")
    report = _cli(folder, monkeypatch, "--method", "fa", "--feedback", "fa.feedback.safetensors")
    cos, _ = _reference(model, folder, "fa", feedback)
    assert [la["cos"] for la in report["layers"]] == pytest.approx(cos, abs=2e-5)  # type: ignore[index]


def test_a_pattern_that_matches_nothing_lists_the_modules(
    trained: tuple[Path, ModuleType, nn.Module, dict[str, torch.Tensor]], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = trained[0]
    monkeypatch.chdir(folder)
    code, _, err = run(
        "run", "convnet.pt", "--arch", "module:convnet:ConvNet", "--arch-config", json.dumps({"channels": C}),
        "--hidden", "blocks.*", "--method", "dfa", "--data", "eval.safetensors",
    )  # fmt: skip
    assert code == ExitCode.INPUT_ERROR and "matches no module" in err and "stages.0" in err


def test_audit_module_in_memory_equals_the_cli_and_leaves_the_model_alone(
    trained: tuple[Path, ModuleType, nn.Module, dict[str, torch.Tensor]], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, module, saved, feedback = trained
    model = module.ConvNet(C)
    model.load_state_dict(saved.state_dict())
    model.train()
    model.head.bias.requires_grad_(False)
    calls: list[int] = []
    model.stages[0].register_forward_hook(lambda m, a, o: calls.append(1))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hooks_before = {name: dict(m._forward_hooks) for name, m in model.named_modules()}
    rng = torch.get_rng_state()

    from safetensors.torch import load_file

    data = load_file(folder / "eval.safetensors")
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data["x"], data["y"]), batch_size=100)
    report = audit_module(model, loader, method="dfa", feedback=feedback, hidden=["stages.*"], device="cpu")
    assert torch.equal(torch.get_rng_state(), rng)

    cli = _cli(folder, monkeypatch, "--method", "dfa")
    assert [la.cos for la in report.measurements.layers] == pytest.approx([la["cos"] for la in cli["layers"]], abs=1e-6)  # type: ignore[index]
    assert model.training and not model.head.bias.requires_grad and model.head.weight.requires_grad
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert {name: dict(m._forward_hooks) for name, m in model.named_modules()} == hooks_before
    assert next(model.parameters()).device.type == "cpu" and calls == []  # the user's hook never saw the audit


def test_data_from_a_function_of_the_users_code(
    trained: tuple[Path, ModuleType, nn.Module, dict[str, torch.Tensor]], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = trained[0]
    (folder / "loaders.py").write_text(
        "import torch\nfrom safetensors.torch import load_file\n\n\n"
        "def eval_batches():\n"
        "    data = load_file('eval.safetensors')\n"
        "    dataset = torch.utils.data.TensorDataset(data['x'], data['y'])\n"
        "    return torch.utils.data.DataLoader(dataset, batch_size=64)\n"
    )
    from_file = _cli(folder, monkeypatch, "--method", "dfa")
    from_function = _cli(folder, monkeypatch, "--method", "dfa", "--data", "module:loaders:eval_batches")
    assert [la["cos"] for la in from_function["layers"]] == [la["cos"] for la in from_file["layers"]]  # type: ignore[index]
    assert {"path": "module:loaders:eval_batches", "sha256": None} in from_function["inputs"]  # type: ignore[operator]
