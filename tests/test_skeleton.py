"""The architecture's keys and shapes are checked on the meta device before its weights are
loaded, without running the random fills of the user's initialisation there (on the meta
device a fill goes through torch._refs, whose first call imports torch._dynamo: seconds of
start-up on every audit of a torchvision-style network)."""

from __future__ import annotations

import subprocess
import sys

from .conftest import ROOT

SCRIPT = """
import sys, torch
from torch import nn
from fa_audit.adapt import skeleton_state
from fa_audit.loading import Bundle
from model_adapters import AdaptedModel


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 10)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.trunc_normal_(self.head.weight, std=0.02)


class Builder:
    def build(self, config, *, seed=None):
        return AdaptedModel(Net(), hidden_modules=("conv",), deep_prefixes=())


bundle = Bundle(arch="net", arch_config={}, method="bp", state_dict={}, builder=Builder())
state = skeleton_state(bundle)
assert all(t.is_meta for t in state.values())
assert {k: tuple(v.shape) for k, v in state.items()} == {k: tuple(v.shape) for k, v in Net().state_dict().items()}
print("torch._dynamo" in sys.modules)
"""


def test_the_skeleton_has_the_shapes_and_runs_no_random_fill() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
