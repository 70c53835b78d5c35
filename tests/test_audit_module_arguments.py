"""Hostile inputs, round 3: ``audit_module`` validates what it is given. Each bad argument
is an InputError with one sentence (never a traceback from deep inside torch), the user's
model is left as it was, and two arguments it once took silently (frozen parameters, an
integer seed of -1) are measured or refused as they should be."""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from fa_audit import InputError, Thresholds, audit_module

from .conftest import SAMPLES

N = 128


class Net(nn.Module):
    """The duck-typed interface: forward(x, return_hidden) and blocks."""

    def __init__(self, out: str = "logits") -> None:
        super().__init__()
        self.embed = nn.Linear(24, 32)
        self.blocks = nn.ModuleList(nn.Linear(32, 32) for _ in range(2))
        self.head = nn.Linear(32, 10)
        self.out = out

    def forward(self, x: torch.Tensor, return_hidden: bool = False) -> Any:
        h = torch.tanh(self.embed(x))
        hidden = [h]
        if self.out == "detach":  # the blocks go on from a copy cut off the graph
            h = h.detach()
        for block in self.blocks:
            h = torch.tanh(block(h))
            hidden.append(h)
        logits = self.head(h)
        if self.out == "dict":
            return {"logits": logits}
        return (logits, hidden) if return_hidden else logits


def _batches(n: int = N) -> list[tuple[torch.Tensor, torch.Tensor]]:
    data = load_file(SAMPLES / "eval.safetensors")
    x, y = data["x"][:n].float(), data["y"][:n]
    return [(x[i : i + 64], y[i : i + 64]) for i in range(0, n, 64)]


def _raising() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    yield _batches()[0]
    raise ValueError("the shard is gone")


def _locked() -> Net:
    model = Net()
    model.lock = threading.Lock()  # type: ignore[assignment]
    return model


def _meta() -> Net:
    with torch.device("meta"):
        return Net()


Call = Callable[[], object]
CASES: dict[str, tuple[Call, str]] = {
    "max_samples 0": (lambda: audit_module(Net(), _batches(), method="bp", max_samples=0), "max_samples"),
    "max_samples negative": (lambda: audit_module(Net(), _batches(), method="bp", max_samples=-5), "max_samples"),
    "batch_size 0": (lambda: audit_module(Net(), _batches(), method="bp", batch_size=0), "batch_size"),
    "seed -1": (lambda: audit_module(Net(), _batches(), method="bp", seed=-1), "seed"),
    "batches None": (lambda: audit_module(Net(), None, method="bp"), "not an iterable"),  # type: ignore[arg-type]
    "not a module": (lambda: audit_module("net", _batches(), method="bp"), "nn.Module"),  # type: ignore[arg-type]
    "cannot be copied": (lambda: audit_module(_locked(), _batches(), method="bp"), "cannot copy the model"),
    "meta device": (lambda: audit_module(_meta(), _batches(), method="bp"), "meta device"),
    "mixed sample shapes": (
        lambda: audit_module(
            Net(), [_batches()[0], (torch.zeros(4, 25), torch.zeros(4, dtype=torch.long))], method="bp"
        ),
        "per-sample shape [25] where the first had [24]",
    ),
    "thresholds a dict": (
        lambda: audit_module(Net(), _batches(), method="bp", thresholds={"null_z": 1}),  # type: ignore[arg-type]
        "must be a Thresholds",
    ),
    "forward returns a dict": (lambda: audit_module(Net("dict"), _batches(), method="bp"), "dict"),
    "generator raises": (lambda: audit_module(Net(), _raising(), method="bp"), "raised ValueError at batch 1"),
    "boolean labels": (
        lambda: audit_module(Net(), [(torch.zeros(4, 24), torch.ones(4, dtype=torch.bool))], method="bp"),
        "labels must be one integer class per sample",
    ),
    "feedback not tensors": (
        lambda: audit_module(Net(), _batches(), method="dfa", feedback={"embed": [[0.0]]}),  # type: ignore[dict-item]
        "feedback['embed'] is a list",
    ),
    "integer feedback": (
        lambda: audit_module(Net(), _batches(), method="dfa", feedback={"embed": torch.ones(10, 32, dtype=torch.long)}),
        "feedback['embed'] is a tensor of torch.int64",
    ),
    "Inf feedback": (
        lambda: audit_module(Net(), _batches(), method="dfa", feedback={"embed": torch.full((10, 32), float("inf"))}),
        "feedback['embed'] holds NaN or Inf",
    ),
    "NaN feedback": (
        lambda: audit_module(Net(), _batches(), method="dfa", feedback={"embed": torch.full((10, 32), float("nan"))}),
        "feedback['embed'] holds NaN or Inf",
    ),
    "no samples": (
        lambda: audit_module(Net(), [(torch.zeros(0, 24), torch.zeros(0, dtype=torch.long))], method="bp"),
        "yields no samples",
    ),
    "unused hidden state": (
        lambda: audit_module(Net("detach"), _batches(), method="bp"),
        "the loss has no gradient at h0 (embed) (the logits do not depend on it",
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_a_bad_argument_is_one_sentence(name: str) -> None:
    call, phrase = CASES[name]
    with pytest.raises(InputError) as caught:
        call()
    message = str(caught.value)
    assert phrase in message and "\n" not in message and "Traceback" not in message, message


def test_a_model_with_every_parameter_frozen_is_audited() -> None:
    """requires_grad on no parameter: the gradient at h_l still exists, and is measured."""
    torch.manual_seed(0)
    model = Net()
    model.requires_grad_(False)
    before = copy.deepcopy(model.state_dict())
    report = audit_module(model, _batches(), method="bp", device="cpu")
    assert all(la.cos == pytest.approx(1.0) and la.grad_check is not None for la in report.measurements.layers)
    assert not any(p.requires_grad for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize(
    ("args", "kwargs", "says"),
    [
        (("settings.yaml",), {}, "settings must be an AuditSettings"),
        ((), {"baseline_accuracy": "0.5"}, "baseline_accuracy must be a number"),
        ((), {"hidden": "blocks.*"}, "hidden takes a list of strings"),
        ((), {"distributed": "no"}, "distributed must be True or False"),
        (
            (),
            {"thresholds": Thresholds(), "config": "t.yaml"},
            "thresholds= or config=, not both",
        ),
    ],
)
def test_arguments_of_the_wrong_kind_are_one_sentence(args: tuple[Any, ...], kwargs: dict[str, Any], says: str) -> None:
    """Hostile inputs, round 4: a str where patterns are meant was read character by character,
    "no" where a bool is meant was true, a settings string was a traceback."""
    with pytest.raises(InputError, match=says):
        audit_module(Net(), _batches(), *args, method="bp", device="cpu", **kwargs)
