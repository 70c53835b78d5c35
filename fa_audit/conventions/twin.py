"""The audit's true-gradient twin of a model: every live layer of known FA code (and every
layer class a user registered) replaced by the plain module that computes the same forward
with the same weights, so that autograd's backward is backprop's. The feedback those layers
held is read from the model's state dict as the library saves it, exactly as from a file."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import InputError
from ..escape import printable
from .base import Convention

Tensor = torch.Tensor
ToPlain = Callable[[nn.Module], nn.Module]

_REGISTERED: dict[type[nn.Module], ToPlain] = {}


def register_plain(layer_class: type[nn.Module], to_plain: ToPlain) -> None:
    """Tell fa-audit how to make a layer of ``layer_class`` (and its subclasses) plain:
    ``to_plain(layer)`` returns a module with the same forward and the same weights, under
    the names its state dict will be loaded with, and autograd's own backward. Without a
    registration, a layer whose backward is not autograd's makes the audit refuse."""
    if not (isinstance(layer_class, type) and issubclass(layer_class, nn.Module)):
        raise TypeError(f"register_plain takes an nn.Module subclass, not {layer_class!r}")
    if not callable(to_plain):
        raise TypeError("register_plain's to_plain must be callable: layer -> plain nn.Module")
    _REGISTERED[layer_class] = to_plain


@dataclass
class Twin:
    module: nn.Module
    replaced: dict[str, str] = field(default_factory=dict)
    """Module name -> what made it plain (a convention's name, or ``register_plain``)."""
    held: dict[str, Tensor] = field(default_factory=dict)
    """Convention name -> the feedback a live module of it kept outside its state dict."""
    originals: dict[str, nn.Module] = field(default_factory=dict)
    """Module name -> the layer it replaced (sharing its weights), to check their forwards agree."""
    points: list[str] = field(default_factory=list)
    """The replaced modules at whose output their library applies the credit (``credit_at_module``)."""
    error_points: list[str] = field(default_factory=list)
    """The replaced modules where their library takes the error its direct feedback projects."""
    trained: dict[str, set[str]] = field(default_factory=dict)
    """Convention name -> the methods its live modules say the network trains with."""


PLAIN_CLASSES = (nn.Linear, nn.Conv1d, nn.Conv2d)


def plain_beside(twin: Twin) -> list[str]:
    """The layers of exactly torch's own Linear or Conv class in a model where layers of FA code
    were made plain: trained with backprop by that code (the sign-symmetry code's default
    classifier is a plain nn.Linear). None where nothing was replaced: there, nothing tells."""
    if not twin.replaced:
        return []
    inside = tuple(f"{name}." for name in twin.replaced)
    return [
        name
        for name, module in twin.module.named_modules()
        if type(module) in PLAIN_CLASSES and name not in twin.replaced and not name.startswith(inside)
    ]


TWIN_RTOL = 1e-4
"""A plain twin's output may differ from its layer's by float32 summation order, no more."""


def check_twins(module: nn.Module, originals: Mapping[str, nn.Module], x: Tensor) -> None:
    """Each plain twin computes its layer's forward on the inputs the model gives it (the first
    eval samples), and the layer's forward is the same twice: a twin chosen by an attribute name
    (``weight_fa``, ``fixed_fb_weights``) on a layer that computes something else (its ReLU inside,
    binarised weights) would audit another network; refused, naming the layer."""
    if not originals:
        return
    seen: dict[str, tuple[tuple[Any, ...], dict[str, Any], Any]] = {}
    modules = dict(module.named_modules())

    def record(name: str) -> Any:
        def hook(mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
            seen.setdefault(name, (args, kwargs, out))

        return hook

    handles = [modules[n].register_forward_hook(record(n), with_kwargs=True) for n in originals if n in modules]
    try:
        with torch.no_grad():
            try:
                module(x)
            except Exception:  # a model that takes fewer samples at a time: the one the shape probe ran on
                seen.clear()
                module(x[:1])
    finally:
        for handle in handles:
            handle.remove()
    for name, (args, kwargs, out) in seen.items():
        layer = originals[name].to(x.device).train(modules[name].training)  # as the audited network runs
        try:
            with torch.no_grad():
                first, again = layer(*args, **kwargs), layer(*args, **kwargs)
        except Exception as exc:
            raise InputError(
                f"{printable(name)}'s own forward cannot run where fa-audit's plain twin does "
                f"({type(exc).__name__}): register its plain form with fa_audit.register_plain"
            ) from None
        _compare(name, layer, out, first, again)


def _compare(name: str, layer: nn.Module, twin_out: Any, first: Any, again: Any) -> None:
    a, b, c = (t.detach() if isinstance(t, Tensor) else None for t in (twin_out, first, again))
    if a is None or b is None or c is None or a.shape != b.shape:
        raise InputError(
            f"the plain twin of {printable(name)} ({type(layer).__name__}) does not give its output's shape: "
            "register its plain form with fa_audit.register_plain"
        )
    if not torch.equal(b, c):
        raise InputError(
            f"{printable(name)} ({type(layer).__name__}) gives another output each time it runs (dropout left on, "
            "or a forward that draws at random): its forward is not deterministic, so no gradient of it can be audited"
        )
    scale = float(b.abs().max()) if b.numel() else 0.0
    worst = float((a - b).abs().max()) if b.numel() else 0.0
    if worst > TWIN_RTOL * max(scale, 1e-30) + 1e-6:
        raise InputError(
            f"fa-audit's plain twin of {printable(name)} ({type(layer).__name__}) computes another forward than the "
            f"layer (they differ by {worst:.3g} on outputs of size {scale:.3g}): its attributes look like a known FA "
            "layer's but it is not one; register its plain form with fa_audit.register_plain"
        )


def twin_note(twin: Twin) -> str | None:
    """What the report says of the replaced layers."""
    if not twin.replaced:
        return None
    names = list(twin.replaced)
    shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    by = ", ".join(sorted(set(twin.replaced.values())))
    return f"audited through plain twins of {shown} ({by}): the reference is autograd's backprop"


def plain_twin(module: nn.Module, first: Sequence[Convention] = ()) -> Twin:
    """``module`` with its live FA layers replaced in place (call it on a copy); the conventions
    ``first`` (a user's ``--feedback-attr``) apply before every library's."""
    twin = Twin(module)
    conventions = (*first, *_conventions())
    for part in module.modules():
        for convention in conventions:
            said = convention.trains_with(part)
            if said is not None:  # under its own name, and the one it is audited as (BioTorch's dfa: dfa_layers)
                twin.trained.setdefault(convention.name, set()).update({said, convention.credit_method(said)})
    _replace_children(module, "", twin, conventions)
    return twin


def _conventions() -> tuple[Convention, ...]:
    from . import CONVENTIONS

    return CONVENTIONS


def _replace_children(parent: nn.Module, prefix: str, twin: Twin, conventions: Sequence[Convention]) -> None:
    for name, child in list(parent.named_children()):
        full = f"{prefix}{name}"
        try:
            made = _plain_form(child, twin, conventions)
        except InputError as exc:
            raise InputError(f"{printable(full)}: {exc.problem}") from None
        if made is None:
            _replace_children(child, f"{full}.", twin, conventions)
            continue
        who, plain, at_module, takes_error = made
        setattr(parent, name, plain)
        twin.replaced[full] = who
        twin.originals[full] = child
        if at_module:
            twin.points.append(full)
        if takes_error:
            twin.error_points.append(full)


def _plain_form(
    module: nn.Module, twin: Twin, conventions: Sequence[Convention]
) -> tuple[str, nn.Module, bool, bool] | None:
    for layer_class, to_plain in _REGISTERED.items():
        if isinstance(module, layer_class):
            try:
                plain = to_plain(module)
            except Exception as exc:  # the user's function: its failure is theirs to fix
                raise InputError(
                    f"the to_plain registered for {layer_class.__name__} raised {type(exc).__name__}: "
                    f"{printable(str(exc).splitlines()[0][:120]) if str(exc) else ''}".rstrip(": ")
                ) from None
            if not isinstance(plain, nn.Module):
                raise InputError(
                    f"the to_plain registered for {layer_class.__name__} returned a {type(plain).__name__}, "
                    "not the plain nn.Module"
                )
            return "register_plain", plain, False, False
    for convention in conventions:
        takes_error = convention.takes_error(module)
        made = convention.plain(module)
        if made is not None:
            held = convention.held_feedback(module)
            if held is not None:
                twin.held[convention.name] = held.detach()
            return convention.name, made, convention.credit_at_module, takes_error
    return None
