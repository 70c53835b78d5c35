"""The model in float64 for the first batch's float64 work, without a float64 copy of a large
model's weights. Each parameter stays the user's float32 tensor and is cast when the forward
reads it; a cast that the backward needs is saved as a pointer to its float32 source and cast
again when the backward runs (saved-tensor hooks). So the float64 weights alive at once are
those of one operation, not the model's: a 67 M-parameter model's float64 copy (512 MiB) was
the audit's peak memory. A small model's casts are kept (:data:`KEEP_BYTES`). The user's
module and its parameters are only read."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from model_adapters import AdaptedModel
from model_adapters.base import graph_free_copy

from .pages import Pages

Tensor = torch.Tensor

_SOURCE = "_fa_audit_float64_of"
"""The attribute that marks a cast with the float32 parameter it was cast from."""
KEEP_BYTES = 128 << 20
"""Up to this float64 size the casts are kept for the whole float64 work (a ResNet-18's are 94 MB):
it reads the model some 18 times (most of them the proof's nudged forwards), and casting on every
read cost a 67 M-parameter model 1.3 s. Above it, every read casts."""
OWN_PAGES = 1 << 20
"""Casts from this size (bytes) are not taken from the heap (:class:`~.pages.Pages`): there the freed casts
of one forward left holes that the next ones did not fit, and a 67 M-parameter model's float64 work
held 300–480 MB more than it used (with glibc's malloc)."""
_CASTS = "_fa_audit_casts"
_CLASSES: dict[tuple[type, tuple[str, ...]], type] = {}
UNFOLD_POSITIONS = 16
"""A float64 Conv2d whose output has at most this many positions per map runs as one product over its
unfolded input (:func:`_conv_forward`). Measured forward and backward on 32 rows, one thread: 1.7–8×
faster at 2 × 2 to 4 × 4 outputs, even at 8 × 8, 2× slower at 16 × 16."""


def in_float64(model: AdaptedModel) -> AdaptedModel:
    """The model reading every floating parameter in float64. Buffers and the tensors a module
    caches as plain attributes (a causal mask) are small, and copied in float64."""
    parameters = list(model.module.parameters())
    module = graph_free_copy(model.module, shared=parameters)
    casts = _Casts(keep=sum(p.numel() for p in parameters if p.is_floating_point()) * 8 <= KEEP_BYTES)
    for part in module.modules():
        _read_in_float64(part, casts)
        for name, buffer in part._buffers.items():
            if buffer is not None and buffer.is_floating_point():
                part._buffers[name] = buffer.double()
        for name, value in list(vars(part).items()):
            if isinstance(value, Tensor) and value.is_floating_point():
                setattr(part, name, value.double())
    vars(module)[_CASTS] = casts
    hooks = torch.autograd.graph.saved_tensors_hooks(_pack, _unpack)
    module.register_forward_pre_hook(lambda *_: hooks.__enter__())
    module.register_forward_hook(lambda *_: hooks.__exit__(None, None, None), always_call=True)
    return replace(model, module=module)


def drop_casts(model64: AdaptedModel) -> None:
    """Free the casts :func:`in_float64` keeps of a small model's parameters (up to KEEP_BYTES): the
    model can be kept for later float64 work without holding a float64 copy of its weights meanwhile;
    they are cast again when next read."""
    casts: _Casts = vars(model64.module)[_CASTS]
    if casts.kept is not None:
        casts.kept = {}


class _Casts:
    """The float64 casts of the parameters. Each is joined to an anchor (one per device) that requires grad, so
    that every h_l is in the graph even where the user's parameters are frozen (+ 0, exactly)."""

    def __init__(self, keep: bool) -> None:
        self.anchors: dict[torch.device, Tensor] = {}
        self.kept: dict[int, Tensor] | None = {} if keep else None
        self.pages = Pages(OWN_PAGES)

    def read(self, source: Tensor) -> Tensor:
        if self.kept is None:
            cast = self.pages.float64_of(source)
            if torch.is_grad_enabled():
                cast.add_(self._anchor(cast.device))
            setattr(cast, _SOURCE, (source, self.pages))  # the backward casts it again (_pack)
            return cast
        if id(source) not in self.kept:
            with torch.enable_grad():
                self.kept[id(source)] = source.detach().to(torch.float64).add_(self._anchor(source.device))
        return self.kept[id(source)]

    def _anchor(self, device: torch.device) -> Tensor:
        if device not in self.anchors:
            self.anchors[device] = torch.zeros((), dtype=torch.float64, device=device, requires_grad=True)
        return self.anchors[device]


def _read_in_float64(part: nn.Module, casts: _Casts) -> None:
    """Replace ``part``'s floating parameters by properties that read them through ``casts``
    (the way torch's parametrizations do, on this copy's own class)."""
    names = tuple(n for n, p in part._parameters.items() if p is not None and p.is_floating_point())
    if not names:
        return
    vars(part)["_fa_audit_sources"] = ({n: part._parameters.pop(n) for n in names}, casts)
    key = (type(part), names)
    if key not in _CLASSES:
        members: dict[str, Any] = {n: _reader(n) for n in names}
        if isinstance(part, nn.Conv2d):
            members["_conv_forward"] = _conv_forward
        _CLASSES[key] = type(type(part).__name__, (type(part),), members)
    part.__class__ = _CLASSES[key]


def _reader(name: str) -> property:
    def read(module: nn.Module) -> Tensor:
        sources, casts = vars(module)["_fa_audit_sources"]
        return casts.read(sources[name])  # type: ignore[no-any-return]

    return property(read)


def _pack(saved: Tensor) -> Any:
    """A cast (or a view of one) as its float32 source, the pages it came from and the view's
    geometry; else itself."""
    base = saved if saved._base is None else saved._base
    found = getattr(base, _SOURCE, None)
    if found is None:
        return saved
    return *found, saved.shape, saved.stride(), saved.storage_offset()


def _unpack(packed: Any) -> Tensor:
    if isinstance(packed, Tensor):
        return packed
    source, pages, shape, stride, offset = packed
    cast: Tensor = pages.float64_of(source)
    return cast.as_strided(shape, stride, offset)


def _conv_forward(self: nn.Conv2d, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """A convolution whose output has few positions as one matrix product over its unfolded input:
    torch's float64 convolution on the CPU has no fast kernel, and there it was 2–8× slower than
    float64 BLAS (a ResNet-18's 512 channels on 2 × 2 maps: 360 ms against 46 for 32 rows, forward
    and backward); with many positions the unfolded input is large and the native one is faster.
    The same sums in another order: the two agree to float64's rounding."""
    padding = self.padding
    size = None if isinstance(padding, str) else _unfolded_size(self, x, padding)
    if size is None or isinstance(padding, str):
        native: Tensor = nn.Conv2d._conv_forward(self, x, weight, bias)
        return native
    columns = F.unfold(x, self.kernel_size, self.dilation, padding, self.stride)  # [n, C·kh·kw, L]
    out = weight.reshape(weight.shape[0], -1) @ columns
    if bias is not None:
        out = out + bias[:, None]
    return out.reshape(x.shape[0], weight.shape[0], *size)


def _unfolded_size(layer: nn.Conv2d, x: Tensor, padding: tuple[int, ...]) -> tuple[int, int] | None:
    """The output's (height, width) where the unfolded product is the faster (few positions: at most
    UNFOLD_POSITIONS) and applies (a batch of float64 maps on the CPU, zero padding, no groups); else
    None. Off the CPU the native kernels are not the slow ones measured."""
    if x.dim() != 4 or x.dtype != torch.float64 or x.device.type != "cpu":
        return None
    if layer.groups != 1 or layer.padding_mode != "zeros":
        return None
    height, width = (
        (x.shape[2 + i] + 2 * padding[i] - layer.dilation[i] * (layer.kernel_size[i] - 1) - 1) // layer.stride[i] + 1
        for i in range(2)
    )
    return (height, width) if height > 0 and width > 0 and height * width <= UNFOLD_POSITIONS else None
