"""Audit a model as it is in memory, from a training loop: ``audit_module(model, loader,
method="dfa", feedback=...)``. The model is left exactly as it was found (mode,
``requires_grad`` flags, hooks, parameters, device, the global RNG): the audit runs on a
copy, under a forked RNG."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from model_adapters import AdaptedModel, AdapterConfigError
from model_adapters.module_path import duck_typed

from .adapt import choose_modules, method_named, order_hidden, probe
from .api import MAX_BATCH, Subject, audit_subject, resolve_device
from .config import Thresholds
from .conventions import recognise
from .errors import InputError
from .loading import checkpoint_dtype
from .loading.data import eval_data_from_batches
from .report import AuditReport, BaselineInfo

Tensor = torch.Tensor
LIVE = Path("<batches>")


def audit_module(
    model: nn.Module,
    batches: Iterable[Any],
    *,
    method: str,
    feedback: Mapping[str, Tensor] | None = None,
    hidden: Sequence[str] | None = None,
    deep: Sequence[str] | None = None,
    thresholds: Thresholds | None = None,
    baseline_accuracy: float | None = None,
    device: str | None = None,
    batch_size: int = 256,
    max_samples: int | None = None,
    seed: int = 0,
) -> AuditReport:
    """Audit ``model`` on ``batches`` of ``(x, y)`` (a DataLoader, a list). ``feedback`` is
    keyed by module name as for a checkpoint; ``hidden`` (module-name patterns, hooks) is
    needed unless the model has ``forward(x, return_hidden=True)`` and ``blocks``.

    The model's own autograd is taken as the true gradient, so its layers must not
    replace their backward (BioTorch's layers and the DRTP hooks do: audit their saved
    state dict instead)."""
    if not 1 <= batch_size <= MAX_BATCH:
        raise InputError(f"batch_size must be from 1 to {MAX_BATCH}")
    credit = method_named(method)
    base = None if baseline_accuracy is None else BaselineInfo("supplied", _fraction(baseline_accuracy))
    dev = resolve_device(device)
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):  # a DataLoader draws from it too
        data = eval_data_from_batches(batches, LIVE, max_samples)
        adapted = _adapted(_twin(model, dev), hidden or (), deep or ())
        first = data.first().to(dev)
        adapted = order_hidden(adapted, first)
        found = probe(adapted, first, LIVE)
        if feedback is None and credit.needs_feedback:
            _refuse_custom_backward(adapted.module)
        subject = Subject(
            name=f"<{type(model).__name__} in memory>",
            arch=f"module:{type(model).__module__}:{type(model).__qualname__}",
            model=adapted,
            method=credit,
            feedback={k: v.detach().to(dev) for k, v in (feedback or {}).items()},
            feedback_source="feedback=",
            dtype=checkpoint_dtype(dict(model.state_dict())),
            notes=list(adapted.notes),
            meta={},
            loading={"hidden_modules": list(adapted.hidden_modules)} if hidden else {},
        )
        thresholds = thresholds or Thresholds()
        return audit_subject(subject, data, found, thresholds, base, dev, batch_size, max_samples, seed, None)


def _twin(model: nn.Module, dev: torch.device) -> nn.Module:
    """A copy to audit in float32 and eval mode. The user's forward and backward hooks
    are left on the original: they watch training, and must not see the audit's passes
    (forward pre-hooks stay, since some compute the weights, as weight_norm does)."""
    twin = copy.deepcopy(model).float().eval().to(dev)
    for module in twin.modules():
        module._forward_hooks.clear()
        module._backward_hooks.clear()
        module._backward_pre_hooks.clear()
    return twin


def _fraction(value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise InputError(f"baseline_accuracy must be a fraction between 0 and 1, not {value!r}")
    return value


def _adapted(module: nn.Module, hidden: Sequence[str], deep: Sequence[str]) -> AdaptedModel:
    try:
        if not hidden:
            return choose_modules(duck_typed(module, type(module).__name__), (), deep)
        return choose_modules(AdaptedModel(module, (), ()), hidden, deep)
    except AdapterConfigError as exc:
        raise InputError(f"{exc} (hidden=)") from None


def _refuse_custom_backward(module: nn.Module) -> None:
    convention = recognise(list(module.state_dict()))
    hint = "pass feedback= (a dict of tensors keyed by module name)"
    if convention is not None:
        hint = (
            f"its layers follow the {convention.name} convention, which replaces their backward, so the model's "
            "autograd is not the true gradient: save model.state_dict() and audit the file (fa-audit run)"
        )
    raise InputError(f"the method needs feedback matrices: {hint}")
