"""Where a library leaves its feedback matrices and what they mean: one small class per
library, all behind :class:`Convention`. A convention claims the state-dict entries that
are feedback, says which method they fix (if any), and maps each to the feedback key of
the method's credit: a layer's name (FA family) or a hidden module's name (DFA family)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import InputError
from ..escape import printable

Tensor = torch.Tensor


@dataclass(frozen=True)
class Layout:
    """What a convention may know of the model it maps feedback onto."""

    kind: str
    """``layer`` (FA family: B has the shape of a weight) or ``hidden`` (DFA family)."""
    hidden_modules: tuple[str, ...]
    consumers: Mapping[str, int]
    """Layer name -> index of the hidden state h_l that is that layer's input."""
    classes: int
    shapes: tuple[tuple[int, ...], ...]
    """Per-sample shape of each h_l."""
    layers: Mapping[str, nn.Module]
    """The layers in ``consumers``, for their stride, padding and the like."""
    makers: Mapping[str, str] = field(default_factory=dict)
    """Layer name -> the module whose output it reads, for the layers that read no hidden state."""


@dataclass(frozen=True)
class Mapped:
    feedback: dict[str, Tensor]
    sources: dict[str, str]
    """Feedback key -> the state-dict entry it came from."""
    notes: list[str]


class Convention(ABC):
    """A library's feedback: in a saved state dict (:meth:`claims`, :meth:`map`) and in a
    live model (:meth:`plain`, :meth:`held_feedback`)."""

    name: str
    description: str
    credit_at_module: bool = False
    """The library applies each matrix's credit at the output of its own module (a training hook
    placed wherever the network puts it: after BatchNorm and ReLU in the DKP gist), so that
    output, found by running the model, is the hidden state the matrix is audited at."""

    @abstractmethod
    def claims(self, key: str) -> bool:
        """Whether the state-dict entry ``key`` is feedback in this convention."""

    def rewrite_state(self, state: dict[str, Tensor], found: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The model's own weights under the names the plain module would have."""
        return state

    def method(self, found: Mapping[str, Tensor], state: Mapping[str, Tensor]) -> str | None:
        """The method these entries fix, when their shapes or names say it."""
        return None

    def credit_method(self, method: str) -> str:
        """The credit this library's layers compute under the name ``method`` (a library may
        apply a method in its own way, which has its own name here)."""
        return method

    @abstractmethod
    def map(self, found: Mapping[str, Tensor], layout: Layout, path: Path | None) -> Mapped:
        """Each entry to the feedback key it feeds."""

    def plain(self, module: nn.Module) -> nn.Module | None:
        """When ``module`` is one of this library's live layers: the plain torch module that
        computes the same forward with the same weights, whose backward is autograd's (the
        audit's twin); None otherwise. Its state dict has the names :meth:`rewrite_state` gives."""
        return None

    def held_feedback(self, module: nn.Module) -> Tensor | None:
        """Feedback a live module keeps outside its state dict (TinyDFA's one matrix), in
        the form a ``--feedback`` file of this convention holds."""
        return None

    def trains_with(self, module: nn.Module) -> str | None:
        """The method a live module of this library says its network trains with (the DRTP code's
        hooks keep their ``train_mode``); None where it says nothing."""
        return None

    def takes_error(self, module: nn.Module) -> bool:
        """Whether ``module`` is where the library takes the error its direct feedback projects
        (TinyDFA's DFA module: the gradient at its input, the output error when it wraps the
        output layer, the gradient below the output layer when it sits before it)."""
        return False


_CONV_DEFAULTS: dict[str, Any] = {"stride": 1, "padding": 0, "dilation": 1, "groups": 1, "padding_mode": "zeros"}


def plain_layer(layer: nn.Module) -> nn.Module:
    """A plain ``nn.Linear``, ``nn.Conv1d`` or ``nn.Conv2d`` sharing ``layer``'s weight and bias
    (its own forward and backward gone): a Linear or Conv subclass keeps its configuration;
    any other module with a 2-D ``weight`` becomes the Linear it computes."""
    weight: Tensor = layer.weight  # type: ignore[assignment]
    bias = getattr(layer, "bias", None)
    plain: nn.Module
    if getattr(layer, "transposed", False) or isinstance(layer, nn.modules.conv._ConvTransposeNd):
        raise InputError(
            f"cannot make a layer of {type(layer).__name__} plain: it is a transposed convolution; register its "
            "plain form with fa_audit.register_plain"
        )
    if isinstance(layer, nn.Conv1d | nn.Conv2d) or weight.dim() in (3, 4):
        # A convolution, or a module holding a conv-shaped weight with a convolution's settings
        # (the Kolen-Pollack code's KPConv2d is an nn.Module with weight and weight_fa).
        kind = nn.Conv2d if weight.dim() == 4 else nn.Conv1d
        settings = {name: getattr(layer, name, default) for name, default in _CONV_DEFAULTS.items()}
        plain = kind(
            weight.shape[1] * settings["groups"], weight.shape[0], tuple(weight.shape[2:]),  # type: ignore[arg-type]
            **settings, bias=bias is not None, device="meta",
        )  # fmt: skip
    elif weight.dim() != 2:
        raise InputError(
            f"cannot make a layer of {type(layer).__name__} plain: its weight has {weight.dim()} dimensions; "
            "register its plain form with fa_audit.register_plain"
        )
    else:
        plain = nn.Linear(weight.shape[1], weight.shape[0], bias is not None, device="meta")
    plain.weight = weight
    plain.bias = bias
    for name, buffer in layer.named_buffers(recurse=False):
        # Integer buffers are configuration the layer's own Function reads (the sign-symmetry code's
        # stride_tensor, padding_tensor): kept, unused, so the state dict loads as the file has it.
        if buffer is not None and not buffer.is_floating_point() and not hasattr(plain, name):
            plain.register_buffer(name, buffer)
    return plain.train(layer.training)


class Passthrough(nn.Module):
    """The plain form of a module that is the identity in the forward pass and only
    changes the backward (a DFA feedback point, a training hook)."""

    def forward(self, x: Tensor, *args: object, **kwargs: object) -> Tensor:
        return x


def holds(module: nn.Module, name: str) -> bool:
    """Whether ``module`` has a tensor attribute ``name`` (a parameter, a buffer or a plain one)."""
    return isinstance(getattr(module, name, None), Tensor)


def module_of(key: str, suffix: str) -> str:
    return key.removesuffix(suffix).removesuffix(".")


def by_layer(found: Mapping[str, Tensor], suffix: str) -> Mapped:
    """FA family: ``<layer><suffix>`` is the feedback of ``<layer>``, the shape of its weight."""
    feedback = {module_of(k, suffix): v for k, v in found.items() if k.endswith(suffix)}
    return Mapped(feedback, {module_of(k, suffix): k for k in found if k.endswith(suffix)}, [])


def by_hidden(found: Mapping[str, Tensor], suffix: str, layout: Layout, path: Path | None, owner: str = "") -> Mapped:
    """DFA family, one matrix per hidden module: ``<module><owner><suffix>`` feeds the output of
    ``<module>``, or of ``<module><owner>`` itself where that is the hidden module (the DRTP code's
    conv blocks pool after their hook); a conv-shaped matrix [classes, C, H, W] is flattened."""
    feedback: dict[str, Tensor] = {}
    sources: dict[str, str] = {}
    for key, value in found.items():
        held = module_of(key, suffix)
        module = held if held in layout.hidden_modules else module_of(held, owner)
        if module not in layout.hidden_modules:
            raise InputError(
                f"feedback entry {printable(key)!r} feeds {printable(module)!r}, which is not a hidden module of "
                f"this model ({', '.join(layout.hidden_modules)}); --rename can map the names",
                path,
            )
        feedback[module], sources[module] = value.flatten(1), key
    return Mapped(feedback, sources, [])
