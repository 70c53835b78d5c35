"""Audit a model as it is in memory, from a training loop: ``audit_module(model, loader,
method="dfa", feedback=...)``. The model is left exactly as it was found (mode,
``requires_grad`` flags, hooks, parameters, device, the global RNG): the audit runs on a
copy, under a forked RNG."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from model_adapters import AdaptedModel, AdapterConfigError
from model_adapters.base import graph_free_copy
from model_adapters.module_path import adapted

from ..adapt import resolve_loss, with_twin
from ..api import audit_bundle
from ..config import Thresholds
from ..conventions import Twin, attribute_convention, plain_twin
from ..errors import InputError
from ..escape import printable
from ..loading import Bundle, Overrides
from ..loading.data import eval_data_from_batches
from ..report import AuditReport
from ..settings import AuditSettings

Tensor = torch.Tensor
LIVE = Path("<batches>")
LIVE_FEEDBACK = Path("feedback=")


def audit_module(
    model: nn.Module,
    batches: Iterable[Any],
    settings: AuditSettings | None = None,
    *,
    feedback: Mapping[str, Tensor] | None = None,
    thresholds: Thresholds | None = None,
    **changes: Any,
) -> AuditReport:
    """Audit ``model`` on ``batches`` of ``(x, y)`` (a DataLoader, a list) by ``settings``
    with ``changes`` (:class:`~fa_audit.settings.AuditSettings` field names): ``method`` is
    needed; ``hidden`` (module-name patterns, hooks) too unless the model has ``forward(x,
    return_hidden=True)`` and ``blocks``; ``thresholds`` are the thresholds already read;
    the baseline can only be ``baseline_accuracy``.

    The audit runs on the model's true-gradient twin, as for a file: the layers of known FA
    code are made plain and their feedback is read from ``model.state_dict()`` as the
    library saves it (TinyDFA's matrix from its DFA module); ``feedback``, keyed by module
    name as in a checkpoint, is needed for any other method that uses feedback. The
    reference is then proved (:mod:`fa_audit.measure.reference_check`)."""
    name = f"<{type(model).__name__} in memory>"
    for patterns in ("hidden", "deep", "bp_layers"):  # None, as a caller holding no patterns passes it
        if changes.get(patterns, ()) is None:
            changes[patterns] = ()
    s = AuditSettings.of(settings, changes)
    _check_arguments(model, feedback, thresholds, s.batch_size, s.max_samples, s.seed)
    method = s.method
    if method is None:
        raise InputError("audit_module needs method=, the credit the model was trained with")
    if s.data is not None or s.fit_baseline or s.baseline is not None or s.feedback is not None:
        raise InputError(
            "audit_module takes its data as batches, feedback as tensors and a baseline as baseline_accuracy="
        )
    if thresholds is not None and s.config is not None:
        raise InputError("audit_module takes thresholds= or config=, not both")
    s = s if thresholds is None else replace(s, config=thresholds)
    twin = plain_twin(_copy(model), attribute_convention(s.feedback_attr))
    _check_trained_method(twin, method)
    if feedback is None and s.feedback_attr is not None:
        feedback = _held_as(model, s.feedback_attr)
    arch = f"module:{type(model).__module__}:{type(model).__qualname__}"
    try:
        made = with_twin(adapted(twin.module, type(model).__name__), twin)
    except AdapterConfigError as exc:
        raise InputError(f"{exc} (hidden=)") from None
    builder = _InMemory(arch, made)
    real, padding = _sampler_padding(batches)
    given = feedback is not None
    held = next(iter(twin.held.items()), None)
    bundle = Bundle(
        arch=arch,
        arch_config={},
        method=method,
        state_dict={k: v.detach() for k, v in model.state_dict().items()},
        feedback=dict(feedback) if feedback is not None else ({} if held is None else {"feedback_matrix": held[1]}),
        feedback_path=LIVE_FEEDBACK if given else None,
        options=Overrides(
            convention=None if given or held is None else held[0],
            hidden=tuple(s.hidden),
            deep=tuple(s.deep),
            bp_layers=tuple(s.bp_layers),
            batch_dim=s.batch_dim,
            feedback_attr=s.feedback_attr,
        ),
        builder=builder,
        notes=(_padding_note(padding),) if padding else (),
    )
    dev = s.torch_device()
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):  # a DataLoader draws from it too
        # In a process group each rank passes its own batches (a DistributedSampler's shard).
        layout = resolve_loss({}, s.loss).targets
        limit = min((n for n in (real, s.max_samples) if n is not None), default=None)
        data = replace(eval_data_from_batches(batches, LIVE, limit, layout), sharded=True)
        report = audit_bundle(bundle, data, s)
    return replace(report, checkpoint=name)


def _check_trained_method(twin: Twin, method: str) -> None:
    """A live library that says how its network trains (the DRTP code's hooks) decides: a credit it
    does not train with gives a Γ that means nothing."""
    for convention, said in twin.trained.items():
        if method not in said:
            trained, given = " and ".join(repr(m) for m in sorted(said)), printable(method)
            raise InputError(
                f"the model's {convention} modules train it with {trained}, but method={given!r} was given: a "
                f"credit the network does not train with gives a Γ that means nothing; pass method={sorted(said)[0]!r}"
            )


def _held_as(model: nn.Module, attribute: str) -> dict[str, torch.Tensor] | None:
    """The feedback your layers keep as the plain attribute ``attribute``, by module name (a buffer
    or parameter of that name is in the state dict, where the convention finds it); None if none."""
    held = {
        name: value.detach()
        for name, m in model.named_modules()
        if isinstance(value := vars(m).get(attribute), torch.Tensor)
    }
    return held or None


def _sampler_padding(batches: object) -> tuple[int | None, int]:
    """A DataLoader whose DistributedSampler pads the dataset with repeats so that every rank gets
    as many samples (``drop_last`` false): this rank's real samples and the whole padding, else
    (None, 0). The repeats are the last samples of the ranks that get one, in every order the
    sampler draws, so this rank's first ``real`` samples are its own."""
    from torch.utils.data import DistributedSampler

    sampler = getattr(batches, "sampler", None)
    if not isinstance(sampler, DistributedSampler) or sampler.drop_last:
        return None, 0
    size = len(sampler.dataset)  # type: ignore[arg-type]
    padding = sampler.total_size - size
    return (len(range(sampler.rank, size, sampler.num_replicas)), padding) if padding > 0 else (None, 0)


def _padding_note(padding: int) -> str:
    return (
        f"the DistributedSampler repeated {padding} sample{'s' if padding > 1 else ''} so that every rank gets as "
        "many; the repeats are left out, each sample counted once"
    )


def _check_arguments(
    model: object,
    feedback: object,
    thresholds: object,
    batch_size: object,
    max_samples: object,
    seed: object,
) -> None:
    """One sentence for each argument that cannot be audited, before any work."""
    if not isinstance(model, nn.Module):
        raise InputError(f"audit_module takes an nn.Module, not a {type(model).__name__}")
    if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
        raise InputError("audit_module got a model on the meta device, which holds no weights to audit")
    for what, value, low in (("batch_size", batch_size, 1), ("max_samples", max_samples, 1), ("seed", seed, 0)):
        if value is None and what == "max_samples":
            continue
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value < 2**63:
            raise InputError(f"audit_module's {what} must be an integer from {low} to 2**63 - 1, not {value!r}")
    if thresholds is not None and not isinstance(thresholds, Thresholds):
        raise InputError(
            f"audit_module's thresholds must be a Thresholds (fa_audit.config.load_thresholds reads a YAML file), "
            f"not a {type(thresholds).__name__}"
        )
    if feedback is not None:
        _check_feedback(feedback)


def _check_feedback(feedback: object) -> None:
    if not isinstance(feedback, Mapping):
        raise InputError(f"audit_module's feedback must map module names to tensors, not a {type(feedback).__name__}")
    for key, value in feedback.items():
        where = f"audit_module's feedback[{printable(repr(key))}]"
        if not isinstance(key, str):
            raise InputError(f"{where}: feedback keys must be module names (strings)")
        if not isinstance(value, Tensor) or not value.is_floating_point():
            kind = f"a tensor of {value.dtype}" if isinstance(value, Tensor) else f"a {type(value).__name__}"
            raise InputError(f"{where} is {kind}; feedback must be floating-point tensors")
        if not torch.isfinite(value).all():
            raise InputError(f"{where} holds NaN or Inf")


@dataclass
class _InMemory:
    """The adapter of one model in memory: its twin, built once (it cannot be re-initialised,
    so a fitted baseline needs the model's class or a checkpoint)."""

    name: str
    model: AdaptedModel
    description: str = "a model in memory"

    def build(self, config: Mapping[str, Any], *, seed: int | None = None) -> AdaptedModel:
        return self.model


def _copy(model: nn.Module) -> nn.Module:
    """A copy to audit in float32 and eval mode. The user's forward and backward hooks
    are left on the original: they watch training, and must not see the audit's passes
    (forward pre-hooks stay, since some compute the weights, as weight_norm does)."""
    try:
        twin = graph_free_copy(model).float().eval()
    except Exception as exc:  # the user's attributes decide what a deepcopy meets
        detail = printable(str(exc).splitlines()[0][:120]) if str(exc) else ""
        raise InputError(
            f"audit_module cannot copy the model ({type(exc).__name__}: {detail}); it audits a copy so that "
            "yours is never changed: keep what cannot be copied (open files, locks, generators) off the model"
        ) from None
    for module in twin.modules():
        module._forward_hooks.clear()
        module._backward_hooks.clear()
        module._backward_pre_hooks.clear()
    return twin
