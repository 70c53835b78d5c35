"""The model in float64 for the first batch's float64 work, without a float64 copy of its
weights. Each parameter stays the user's float32 tensor and is cast when the forward reads
it; a cast that the backward needs is saved as a pointer to its float32 source and cast
again when the backward runs (saved-tensor hooks). So the float64 weights alive at once are
those of one operation, not the model's: a 67 M-parameter model's float64 copy (512 MiB)
was the audit's peak memory. The user's module and its parameters are only read."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import nn

from model_adapters import AdaptedModel
from model_adapters.base import graph_free_copy

Tensor = torch.Tensor

_SOURCE = "_fa_audit_float64_of"
"""The attribute that marks a cast with the float32 parameter it was cast from."""
_CLASSES: dict[tuple[type, tuple[str, ...]], type] = {}


def in_float64(model: AdaptedModel) -> AdaptedModel:
    """The model reading every floating parameter in float64. Every cast is joined to one
    anchor that requires grad, so every h_l is in the graph even where the user's parameters
    are frozen; buffers and the tensors a module caches as plain attributes (a causal mask)
    are small, and copied in float64."""
    module = graph_free_copy(model.module, shared=list(model.module.parameters()))
    anchor = torch.zeros((), dtype=torch.float64, requires_grad=True)
    for part in module.modules():
        _read_in_float64(part, anchor)
        for name, buffer in part._buffers.items():
            if buffer is not None and buffer.is_floating_point():
                part._buffers[name] = buffer.double()
        for name, value in list(vars(part).items()):
            if isinstance(value, Tensor) and value.is_floating_point():
                setattr(part, name, value.double())
    hooks = torch.autograd.graph.saved_tensors_hooks(_pack, _unpack)
    module.register_forward_pre_hook(lambda *_: hooks.__enter__())
    module.register_forward_hook(lambda *_: hooks.__exit__(None, None, None), always_call=True)
    return replace(model, module=module)


def _read_in_float64(part: nn.Module, anchor: Tensor) -> None:
    """Replace ``part``'s floating parameters by properties that cast them on every read (the
    way torch's parametrizations do, on this copy's own class)."""
    names = tuple(n for n, p in part._parameters.items() if p is not None and p.is_floating_point())
    if not names:
        return
    vars(part)["_fa_audit_sources"] = ({n: part._parameters.pop(n) for n in names}, anchor)
    key = (type(part), names)
    if key not in _CLASSES:
        _CLASSES[key] = type(type(part).__name__, (type(part),), {n: _reader(n) for n in names})
    part.__class__ = _CLASSES[key]


def _reader(name: str) -> property:
    def read(module: nn.Module) -> Tensor:
        sources, anchor = vars(module)["_fa_audit_sources"]
        return _cast(sources[name], anchor)

    return property(read)


def _cast(source: Tensor, anchor: Tensor) -> Tensor:
    cast = source.detach().to(torch.float64).add_(anchor)  # + 0 exactly; in the graph through the anchor
    setattr(cast, _SOURCE, source)
    return cast


def _pack(saved: Tensor) -> Any:
    """A cast (or a view of one) as its float32 source and the view's geometry; else itself."""
    base = saved if saved._base is None else saved._base
    source = getattr(base, _SOURCE, None)
    if source is None:
        return saved
    return source, saved.shape, saved.stride(), saved.storage_offset()


def _unpack(packed: Any) -> Tensor:
    if isinstance(packed, Tensor):
        return packed
    source, shape, stride, offset = packed
    cast: Tensor = source.detach().to(torch.float64)
    return cast.as_strided(shape, stride, offset)
