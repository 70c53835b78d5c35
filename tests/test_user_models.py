"""A user's model that fails in its own forward gets one sentence saying why, never exit 4: a
forward that needs more than x (the DKP gist's forward(x, target)), tensors sized for the
training batch (its fc1_out buffers), a model with blocks but no return_hidden."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fa_audit import ExitCode, InputError, audit_module

from .cli_runner import run
from .conftest import SAMPLES, user_module

NET = '''
import torch
from torch import nn
import torch.nn.functional as F


class NeedsTarget(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(24, 32), nn.Linear(32, 10)

    def forward(self, x, target):
        return self.fc2(F.relu(self.fc1(x)))


class FixedBatch(nn.Module):
    """Keeps each batch's activations in a tensor sized for its training batch, as the DKP gist does."""

    def __init__(self, batch_size=64):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(24, 32), nn.Linear(32, 10)
        self.fc1_out = torch.zeros([batch_size, 32])

    def forward(self, x):
        x = F.relu(self.fc1(x))
        self.fc1_out[: x.shape[0]].data.copy_(x.data)
        return self.fc2(x)


class Blocks(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([nn.Linear(24, 24)])
        self.head = nn.Linear(24, 10)

    def forward(self, x):
        return self.head(self.blocks[0](x))
'''
DATA = ["--data", str(SAMPLES / "eval.safetensors")]


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    module = user_module(tmp_path, "usernets", NET)
    for name in ("NeedsTarget", "FixedBatch", "Blocks"):
        torch.save(getattr(module, name)().state_dict(), tmp_path / f"{name}.pt")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    ("name", "flags", "says"),
    [
        ("NeedsTarget", ["--hidden", "fc1"], "missing 1 required positional argument: 'target'): fa-audit calls "
                                             "forward(x) with the input alone"),
        ("FixedBatch", ["--hidden", "fc1"], "on a batch of 256 samples of shape [24]: a model that keeps tensors sized "
                                            "for its training batch needs that size as --batch-size"),
        ("Blocks", [], "it has no forward(x, return_hidden=True), so name its hidden modules: --hidden"),
    ],
)  # fmt: skip
def test_a_users_forward_that_fails_is_one_sentence(folder: Path, name: str, flags: list[str], says: str) -> None:
    code, _, err = run("run", f"{name}.pt", "--arch", f"module:usernets:{name}", "--method", "bp", *flags, *DATA)
    assert code == ExitCode.INPUT_ERROR, err
    assert says in err and len(err.strip().splitlines()) == 1 and "internal error" not in err


def test_the_fixed_batch_model_audits_at_its_own_batch_size(folder: Path) -> None:
    code, _, err = run("run", "FixedBatch.pt", "--arch", "module:usernets:FixedBatch", "--method", "bp",
                       "--hidden", "fc1", "--batch-size", "64", *DATA)  # fmt: skip
    assert code == ExitCode.INCOMPLETE, err


def test_live_the_same_failure_is_an_input_error(folder: Path) -> None:
    import usernets  # type: ignore[import-not-found]

    x, y = torch.randn(128, 24), torch.randint(0, 10, (128,))
    with pytest.raises(InputError, match="fa-audit calls forward"):
        audit_module(usernets.NeedsTarget(), [(x, y)], method="bp", hidden=["fc1"], device="cpu")
