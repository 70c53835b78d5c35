"""The DRTP reference code (Frenkel et al.): ``fixed_fb_weights``, a frozen Parameter.
DFA, sDFA and DRTP keep one per block in a hook module after the block's activation
(``layers.{i}.hook.fixed_fb_weights``, [classes, width] or [classes, C, H, W]): it feeds
the block's output. FA wraps each layer (``layers.{i}.fc.fixed_fb_weights``, the shape
of W) and moves the layer's weights to ``layers.{i}.fc.module.*``. Live, the wrapper sends
the error back through B by tensor hooks, and a hook module's autograd Function replaces
the gradient at the block's output: their plain forms are the wrapped layer and the identity."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

from torch import nn

from ..errors import InputError
from ..escape import printable
from .base import Convention, Layout, Mapped, Passthrough, Tensor, by_hidden, by_layer, module_of

SUFFIX, HOOK = ".fixed_fb_weights", ".hook"
MODES = {"FA": "fa", "DFA": "dfa", "sDFA": "sdfa", "DRTP": "drtp", "shallow": "frozen"}
"""A hook's ``train_mode`` and the method that audits it ("shallow" trains the output layer alone: the
frozen-blocks baseline). "BP" says nothing: the output layer's hook is in BP mode in every network
the code builds."""


class DRTP(Convention):
    name = "drtp"
    description = "DRTP code: <block>.hook.fixed_fb_weights (dfa, sdfa, drtp), <layer>.fixed_fb_weights (fa)"

    def claims(self, key: str) -> bool:
        return key.endswith(SUFFIX)

    def rewrite_state(self, state: dict[str, Tensor], found: Mapping[str, Tensor]) -> dict[str, Tensor]:
        wrappers = tuple(module_of(k, SUFFIX) + ".module." for k in found if not _is_hook(k))
        out = {}
        for key, value in state.items():
            wrapper = next((w for w in wrappers if key.startswith(w)), None)
            name = key if wrapper is None else wrapper.removesuffix("module.") + key[len(wrapper) :]
            if name in out or (wrapper is not None and name in state):
                raise InputError(
                    f"holds both {printable(key)!r} (inside the DRTP code's FA wrapper) and {printable(name)!r}, "
                    "the name the wrapped layer's weight takes once unwrapped: which one is the layer cannot be told"
                )
            out[name] = value
        return out

    def method(self, found: Mapping[str, Tensor], state: Mapping[str, Tensor]) -> str | None:
        return "fa" if found and not any(_is_hook(k) for k in found) else None

    def plain(self, module: nn.Module) -> nn.Module | None:
        if not hasattr(module, "fixed_fb_weights"):  # None on a hook in BP or FA mode
            return None
        wrapped = getattr(module, "module", None)
        return wrapped if isinstance(wrapped, nn.Module) else Passthrough()

    def trains_with(self, module: nn.Module) -> str | None:
        mode = getattr(module, "train_mode", None)
        return MODES.get(mode) if isinstance(mode, str) and hasattr(module, "fixed_fb_weights") else None

    def map(self, found: Mapping[str, Tensor], layout: Layout, path: Path | None) -> Mapped:
        if layout.kind == "layer":
            return by_layer({k: v for k, v in found.items() if not _is_hook(k)}, SUFFIX)
        mapped = by_hidden({k: v for k, v in found.items() if _is_hook(k)}, SUFFIX, layout, path, owner=HOOK)
        for module, b in mapped.feedback.items():
            width = math.prod(layout.shapes[layout.hidden_modules.index(module)])
            if module + HOOK not in layout.hidden_modules and b.shape[1] != width:
                raise InputError(
                    f"holds the DRTP code's feedback {printable(mapped.sources[module])!r} of {b.shape[1]} units, but "
                    f"{printable(module)}'s output has {width}: its conv blocks pool after the hook, so the matrix "
                    f"feeds the hook's output; declare --hidden {printable(module + HOOK)}",
                    path,
                )
        return mapped


def _is_hook(key: str) -> bool:
    return key.endswith(HOOK + SUFFIX)
