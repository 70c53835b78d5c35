"""Hidden states by forward hooks: h_0..h_L are the outputs of named modules, in the order
they run. One mechanism for the built-in adapters that use it and for ``--hidden``."""

from __future__ import annotations

import fnmatch
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from .base import AdapterConfigError

Tensor = torch.Tensor
Run = tuple[str, Tensor, bool]
"""A hidden module's name, its output tensor, and whether that came out of a tuple."""


def _component(pattern: str) -> str:
    """One dotted component: ``*`` and ``[1-4]`` as in a shell, never crossing a dot."""
    return fnmatch.translate(pattern).removeprefix("(?s:").removesuffix(")\\Z").replace(".*", "[^.]*")


def compile_patterns(patterns: Iterable[str]) -> list[re.Pattern[str]]:
    """``stages.*``, ``encoder.layers.*.mlp``, ``blocks.[1-4]``; comma-separated too."""
    split = [p.strip() for given in patterns for p in given.split(",") if p.strip()]
    return [re.compile(r"\.".join(_component(part) for part in p.split(".")) + r"\Z") for p in split]


def select(module: nn.Module, patterns: Iterable[str], option: str = "--hidden") -> list[str]:
    """Names of the modules that match, in definition order; none is an error listing the names."""
    patterns = list(patterns)
    compiled = compile_patterns(patterns)
    names = [name for name, _ in module.named_modules() if name]
    matched = [name for name in names if any(p.match(name) for p in compiled)]
    if not matched:
        shown = ", ".join(names[:12]) + (f" (and {len(names) - 12} more)" if len(names) > 12 else "")
        raise AdapterConfigError(f"{option} {','.join(patterns)} matches no module; the modules are: {shown}")
    return matched


def first_tensor(output: Any) -> Tensor | None:
    if isinstance(output, Tensor):
        return output
    if isinstance(output, tuple | list):
        return next((o for o in output if isinstance(o, Tensor)), None)
    return None


@contextmanager
def capture(module: nn.Module, names: Iterable[str], batch_dim: int = 0) -> Iterator[list[Run]]:
    """Each output of the named modules while the block runs, in run order, samples first.

    With the samples along ``batch_dim`` (a sequence-first model's [T, N, D]), the output is
    recorded as its view with the samples first and the module hands the model that view moved
    back: the rest of the forward then runs through the recorded tensor, so that its gradient
    is the one the loss sends there."""
    runs: list[Run] = []
    modules = dict(module.named_modules())

    def hook(name: str) -> Any:
        def record(mod: nn.Module, args: Any, out: Any) -> Any:
            tensor = first_tensor(out)
            if tensor is None:
                raise AdapterConfigError(f"hidden module {name} returns no tensor (a {type(out).__name__})")
            packed = not isinstance(out, Tensor)
            if not batch_dim:
                runs.append((name, tensor, packed))
                return None
            if tensor.dim() <= batch_dim:
                raise AdapterConfigError(
                    f"hidden module {name} returns a tensor of shape {list(tensor.shape)}, which has no dimension "
                    f"{batch_dim} for the samples (--batch-dim)"
                )
            samples_first = tensor.movedim(batch_dim, 0)
            runs.append((name, samples_first, packed))
            moved_back = samples_first.movedim(0, batch_dim)
            if not packed:
                return moved_back
            return type(out)(moved_back if o is tensor else o for o in out)

        return record

    handles = [modules[name].register_forward_hook(hook(name)) for name in names]
    try:
        yield runs
    finally:
        for handle in handles:
            handle.remove()


def run_order(module: nn.Module, names: list[str], x: Tensor) -> tuple[list[str], list[str]]:
    """The named modules in the order one forward runs them (on ``x`` as the model takes it), and
    notes for the report. A module that runs twice or never is an error: its output is not one
    hidden state."""
    from .base import users_forward

    with torch.no_grad(), users_forward(module, x), capture(module, names) as runs:
        module(x)
    ran = [name for name, _, _ in runs]
    counts = Counter(ran)  # not ran.count per name: quadratic in thousands of hidden modules
    for name in names:
        if counts[name] != 1:
            how = "does not run" if not counts[name] else f"runs {counts[name]} times"
            raise AdapterConfigError(
                f"hidden module {name} {how} in one forward, so its output is not one hidden state"
            )
    notes = [f"{name} returns a tuple: its first tensor is the hidden state" for name, _, packed in runs if packed]
    return ran, notes


def hidden_by_hooks(
    module: nn.Module, names: tuple[str, ...], x: Tensor, batch_dim: int = 0
) -> tuple[Tensor, list[Tensor]]:
    """One forward of ``x`` as the model takes it: the logits as it gives them, and the named
    modules' outputs samples first (:func:`capture`), in ``names`` order."""
    with capture(module, names, batch_dim) as runs:
        logits = first_tensor(module(x))
    if logits is None:
        raise AdapterConfigError("the model's forward returns no tensor of logits")
    outputs = {name: tensor for name, tensor, _ in runs}
    return logits, [outputs[name] for name in names]
