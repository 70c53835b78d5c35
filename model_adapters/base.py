"""What an adapter hands the audit: a model plus the names that tie hidden states,
deep blocks and feedback keys to its modules."""

from __future__ import annotations

import inspect
import re
import traceback
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn


class AdapterConfigError(ValueError):
    """An arch_config that the adapter cannot build a model from."""


class InputShapeError(RuntimeError):
    """A model's refusal, from its adapter's forward, of an input it cannot take: the data's problem,
    not a bug (a RuntimeError, as torch's own shape errors are)."""


class UserForwardError(AdapterConfigError):
    """The user's own model code failed in a forward; ``cause`` is what it raised."""

    def __init__(self, message: str, cause: BaseException) -> None:
        super().__init__(message)
        self.cause = cause


_OURS = tuple(
    str(Path(p).resolve().parent) for p in (torch.__file__, __file__)
)  # torch's and the built-in adapters' own code: an error there is not the user's


def _user_files(module: nn.Module) -> set[str]:
    """The source files of the module's classes that are the user's (not torch's, not built in)."""
    files = set()
    for part in module.modules():
        try:
            source = inspect.getsourcefile(type(part))
        except TypeError:
            continue
        if source is not None and not str(Path(source).resolve()).startswith(_OURS):
            files.add(str(Path(source).resolve()))
    return files


@contextmanager
def users_forward(module: nn.Module, x: torch.Tensor) -> Iterator[None]:
    """A TypeError or RuntimeError raised inside the user's own forward is the model's, not
    fa-audit's: said as an AdapterConfigError naming it and the usual cause."""
    try:
        yield
    except (TypeError, RuntimeError, ValueError, IndexError) as exc:
        if isinstance(exc, AdapterConfigError | InputShapeError):  # already said what it is
            raise
        message = str(exc).splitlines()[0][:160] if str(exc) else ""
        signature = isinstance(exc, TypeError) and re.search(r"forward\(\) (missing|takes|got an unexpected)", message)
        frames = [Path(f.filename).resolve() for f in traceback.extract_tb(exc.__traceback__)]
        users = _user_files(module)
        if not users or not (signature or any(str(f) in users for f in frames)):
            raise
        what = f"{type(exc).__name__}: {message}"
        if signature and "return_hidden" in message:
            why = ": it has no forward(x, return_hidden=True), so name its hidden modules: --hidden PATTERN, hidden="
        elif signature:
            why = (
                ": fa-audit calls forward(x) with the input alone; give the model a forward that takes x alone "
                "(a subclass or a wrapper that passes the rest)"
            )
        else:
            why = (
                f" on a batch of {x.shape[0]} samples of shape {list(x.shape[1:])}: a model that keeps tensors sized "
                "for its training batch needs that size as --batch-size (batch_size= in the API), and one that takes "
                "inputs of another shape or kind needs other eval data"
            )
        raise UserForwardError(f"the model's own forward failed ({what}){why}", exc) from exc


def graph_free_copy(module: nn.Module, shared: Sequence[torch.Tensor] = ()) -> nn.Module:
    """``copy.deepcopy(module)``, the tensors with a graph that live layers keep as attributes
    (TinyDFA's feedback points after a forward, on modules of the tree or in lists beside it)
    copied detached: ``copy.deepcopy`` refuses them, and the copy needs none of their history.
    The ``shared`` tensors are not copied: the copy holds the same ones."""
    import copy

    memo: dict[int, Any] = {id(t): t for t in shared}
    seen: set[int] = set()
    todo: list[nn.Module] = list(module.modules())
    while todo:
        part = todo.pop()
        if id(part) in seen:
            continue
        seen.add(id(part))
        for value in vars(part).values():
            for item in value if isinstance(value, list | tuple) else (value,):
                if isinstance(item, torch.Tensor) and item.grad_fn is not None:
                    memo[id(item)] = item.detach().clone()
                elif isinstance(item, nn.Module):
                    todo.append(item)
    return copy.deepcopy(module, memo)


@dataclass(frozen=True)
class AdaptedModel:
    """A model that exposes its hidden states h_0..h_L.

    ``hidden_modules[l]`` names the module whose output is h_l (``embed``,
    ``blocks.0``, ...): DFA feedback keys use these names. ``deep_prefixes``
    select the parameters of the deep blocks, the ones a frozen-blocks baseline
    keeps at initialisation.
    """

    module: nn.Module
    hidden_modules: tuple[str, ...]
    deep_prefixes: tuple[str, ...]
    hooked: bool = False
    """Hidden states are the outputs of ``hidden_modules``, captured by forward hooks
    (``forward(x)`` returns logits only); otherwise ``forward(x, return_hidden=True)``."""
    notes: tuple[str, ...] = ()
    credit_points: tuple[str, ...] = ()
    """Modules at whose output a hook-based method applies its credit (the DKP gist's DFA hooks):
    a hooked hidden module followed by one is audited at the hook's output."""
    replaced: Mapping[str, nn.Module] = field(default_factory=dict, compare=False, repr=False)
    """The layers the audit's plain twins replaced, by name, sharing their weights: their own
    forwards are checked against the twins' (fa_audit.conventions.twin.check_twins)."""
    bp_layers: tuple[str, ...] = ()
    """Layers trained with backprop in a network whose other layers use feedback (a mixed
    network: the sign-symmetry code's default classifier, any "last layer BP" FA net): the
    FA family's credit goes through their own W."""
    batch_dim: int = 0
    """The dimension of the model's input, output and hidden states that holds the samples (1 for
    a sequence-first model's [T, N, ...], TinyDFA's transformer): the audit sees every one of
    them samples first, the model its own layout."""
    error_point: str | None = None
    """A module whose output's gradient a direct method projects in place of the output error
    (TinyDFA's DFA module placed before the output layer); None: the output error."""

    def to_model(self, t: torch.Tensor) -> torch.Tensor:
        """A samples-first tensor in the model's own layout."""
        return t.movedim(0, self.batch_dim) if self.batch_dim else t

    def to_audit(self, t: torch.Tensor) -> torch.Tensor:
        """A tensor of the model's layout, samples first."""
        return t.movedim(self.batch_dim, 0) if self.batch_dim else t

    def forward_hidden(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The logits and h_0..h_L of one forward, samples first; an error raised inside the user's
        own model code is an :class:`AdapterConfigError` that says what it was and what to do."""
        with users_forward(self.module, x):
            return self._forward_hidden(x)

    def forward_with_point(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor | None]:
        """:meth:`forward_hidden` and the output of ``error_point`` (samples first, in the graph)."""
        if self.error_point is None:
            return (*self.forward_hidden(x), None)
        from .hooks import capture

        with capture(self.module, [self.error_point], self.batch_dim) as runs:
            logits, hidden = self.forward_hidden(x)
        if len(runs) != 1:
            raise AdapterConfigError(f"{self.error_point} runs {len(runs)} times in one forward, not once")
        return logits, hidden, runs[0][1]

    def _forward_hidden(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if self.hooked:
            from .hooks import hidden_by_hooks

            logits, hidden = hidden_by_hooks(self.module, self.hidden_modules, self.to_model(x), self.batch_dim)
            return self.to_audit(logits), hidden
        if self.batch_dim:
            raise AdapterConfigError(
                "a model whose samples are not along dimension 0 needs its hidden states by hooks: name them with "
                "--hidden (hidden= in audit_module)"
            )
        out = self.module(x, return_hidden=True)
        if not (isinstance(out, tuple | list) and len(out) == 2 and isinstance(out[0], torch.Tensor)):
            raise AdapterConfigError(
                f"forward(x, return_hidden=True) returns a {type(out).__name__}, not (logits, hidden states)"
            )
        hidden = out[1]
        if not (isinstance(hidden, tuple | list) and all(isinstance(h, torch.Tensor) for h in hidden)):
            raise AdapterConfigError(
                "forward(x, return_hidden=True) returns hidden states that are not a list of tensors"
            )
        return out[0], list(hidden)

    def forward_watched(
        self, x: torch.Tensor, hooks: Mapping[str, Any], *, pre: bool = False
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """:meth:`forward_hidden` without autograd, with ``hooks`` by module name on those
        modules (forward hooks; forward pre-hooks with ``pre``) for this one pass."""
        modules = dict(self.module.named_modules())
        register = "register_forward_pre_hook" if pre else "register_forward_hook"
        handles = [getattr(modules[name], register)(hook) for name, hook in hooks.items()]
        try:
            with torch.no_grad():
                return self.forward_hidden(x)
        finally:
            for handle in handles:
                handle.remove()

    def linear_layers(self) -> list[str]:
        """Names of the Linear and Conv layers."""
        return [name for name, mod in self.module.named_modules() if isinstance(mod, nn.Linear | nn.Conv1d | nn.Conv2d)]

    def feedback_layers(self) -> list[str]:
        """Names of the layers FA feedback replaces in the backward pass: the Linear and Conv
        layers but those trained with backprop (``bp_layers``)."""
        return [name for name in self.linear_layers() if name not in self.bp_layers]

    def is_deep(self, param_name: str) -> bool:
        return param_name.startswith(self.deep_prefixes)


class Adapter(Protocol):
    """Builds an :class:`AdaptedModel` from an arch_config; ``seed`` fixes the init."""

    name: str
    description: str

    def build(self, config: Mapping[str, Any], *, seed: int | None = None) -> AdaptedModel: ...


MAX_SIZE = 1 << 24
"""No width, depth or class count beyond this: far above any network audited on one machine."""


def _short(value: object) -> str:
    text = (
        repr(value)
        if not isinstance(value, int) or value.bit_length() < 64
        else f"an integer of {value.bit_length()} bits"
    )
    return text if len(text) <= 40 else text[:37] + "..."


def take_config(config: Mapping[str, Any], required: Mapping[str, type], optional: Mapping[str, Any]) -> dict[str, Any]:
    """Validate an arch_config against the keys an adapter knows; fill defaults."""
    unknown = sorted(set(config) - set(required) - set(optional))
    if unknown:
        raise AdapterConfigError(f"unknown arch_config key(s): {', '.join(unknown)}")
    missing = sorted(set(required) - set(config))
    if missing:
        raise AdapterConfigError(f"arch_config lacks required key(s): {', '.join(missing)}")
    out = {**optional, **config}
    for key, value in out.items():
        want = required.get(key, type(optional.get(key)))
        if want is int and (isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_SIZE):
            raise AdapterConfigError(f"arch_config key {key!r} must be an integer from 1 to 2**24, got {_short(value)}")
        if want is bool and not isinstance(value, bool):
            raise AdapterConfigError(f"arch_config key {key!r} must be true or false, got {_short(value)}")
    return out


@contextmanager
def seeded_init(seed: int | None) -> Iterator[None]:
    """Run module construction under ``seed`` without disturbing the caller's RNG."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
