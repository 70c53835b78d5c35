"""Where a library leaves its feedback matrices and what they mean: one small class per
library, all behind :class:`Convention`. A convention claims the state-dict entries that
are feedback, says which method they fix (if any), and maps each to the feedback key of
the method's credit: a layer's name (FA family) or a hidden module's name (DFA family)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

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


@dataclass(frozen=True)
class Mapped:
    feedback: dict[str, Tensor]
    sources: dict[str, str]
    """Feedback key -> the state-dict entry it came from."""
    notes: list[str]


class Convention(ABC):
    name: str
    description: str

    @abstractmethod
    def claims(self, key: str) -> bool:
        """Whether the state-dict entry ``key`` is feedback in this convention."""

    def rewrite_state(self, state: dict[str, Tensor], found: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The model's own weights under the names the plain module would have."""
        return state

    def method(self, found: Mapping[str, Tensor], state: Mapping[str, Tensor]) -> str | None:
        """The method these entries fix, when their shapes or names say it."""
        return None

    def check_method(self, method: str, found: Mapping[str, Tensor], path: Path | None) -> None:  # noqa: B027
        """Refuse a method that would misread these entries (by default, none would)."""

    @abstractmethod
    def map(self, found: Mapping[str, Tensor], layout: Layout, path: Path | None) -> Mapped:
        """Each entry to the feedback key it feeds."""


def module_of(key: str, suffix: str) -> str:
    return key.removesuffix(suffix).removesuffix(".")


def by_layer(found: Mapping[str, Tensor], suffix: str) -> Mapped:
    """FA family: ``<layer><suffix>`` is the feedback of ``<layer>``, the shape of its weight."""
    feedback = {module_of(k, suffix): v for k, v in found.items() if k.endswith(suffix)}
    return Mapped(feedback, {module_of(k, suffix): k for k in found if k.endswith(suffix)}, [])


def by_hidden(found: Mapping[str, Tensor], suffix: str, layout: Layout, path: Path | None, owner: str = "") -> Mapped:
    """DFA family, one matrix per hidden module: ``<module><owner><suffix>`` feeds the
    output of ``<module>``; a conv-shaped matrix [classes, C, H, W] is flattened."""
    feedback: dict[str, Tensor] = {}
    sources: dict[str, str] = {}
    for key, value in found.items():
        module = module_of(module_of(key, suffix), owner)
        if module not in layout.hidden_modules:
            raise InputError(
                f"feedback entry {printable(key)!r} feeds {printable(module)!r}, which is not a hidden module of "
                f"this model ({', '.join(layout.hidden_modules)}); --rename can map the names",
                path,
            )
        feedback[module], sources[module] = value.flatten(1), key
    return Mapped(feedback, sources, [])
