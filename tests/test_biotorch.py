"""BioTorch's own layers (``pip install --no-deps biotorch==0.0.16``; skipped when absent):
a tanh MLP built from them is trained a few steps by BioTorch's backward, saved as its
users save it (DataParallel's ``module.`` prefix, a training container), audited with
only --arch, --arch-config and --method, and every layer's Γ compared with the cosine of
BioTorch's own backward against the true gradient."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from .cli_runner import run
from .conftest import SAMPLES

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
