"""Credit-assignment methods, by name; plugins join through ``fa_audit.methods``."""

from __future__ import annotations

from importlib.metadata import entry_points

from model_adapters.registry import report_broken_plugin

from .base import Batch, CreditMethod, Feedback, Forward, Probe, backward_start
from .bp import Backprop
from .dfa import DirectFeedbackAlignment, DirectRandomTargetProjection, SignDirectFeedbackAlignment
from .fa import (
    BatchRandomSignFeedback,
    FeedbackAlignment,
    FixedRandomSignFeedback,
    KolenPollack,
    LayerwiseDirectFeedback,
    SignSymmetry,
    UniformSignFeedback,
)
from .frozen import FrozenBlocks

ENTRY_POINT_GROUP = "fa_audit.methods"

_METHODS: dict[str, CreditMethod] = {}


def register_method(method: CreditMethod) -> CreditMethod:
    if method.name in _METHODS:
        raise ValueError(f"a method named {method.name!r} is already registered")
    _METHODS[method.name] = method
    return method


for _builtin in (
    Backprop(),
    DirectFeedbackAlignment(),
    DirectRandomTargetProjection(),
    SignDirectFeedbackAlignment(),
    FeedbackAlignment(),
    KolenPollack(),
    BatchRandomSignFeedback(),
    FixedRandomSignFeedback(),
    SignSymmetry(),
    UniformSignFeedback(),
    LayerwiseDirectFeedback(),
    FrozenBlocks(),
):
    register_method(_builtin)


_discovered = False


def _discover() -> None:
    """The plugins' entry points, read once per process (a scan of every installed distribution's
    metadata: 6 ms a call, a tenth of a small audit when every lookup paid it)."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _METHODS:
            continue
        try:
            loaded = ep.load()
            register_method(loaded() if isinstance(loaded, type) else loaded)
        except Exception as exc:  # a broken plugin must not take the tool down
            report_broken_plugin("method", ep, exc)


def get_method(name: str) -> CreditMethod:
    _discover()
    try:
        return _METHODS[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r} (registered: {', '.join(sorted(_METHODS))})") from None


def list_methods() -> dict[str, CreditMethod]:
    _discover()
    return dict(sorted(_METHODS.items()))


__all__ = [
    "Batch",
    "CreditMethod",
    "Feedback",
    "Forward",
    "Probe",
    "backward_start",
    "get_method",
    "list_methods",
    "register_method",
]
