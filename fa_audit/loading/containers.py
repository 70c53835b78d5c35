"""Checkpoint containers as training code writes them: a bare ``model.state_dict()``, or
a dict holding the state dict under a common key (``state_dict``, ``model_state_dict``,
``model``, ``net``, ...) beside the epoch, the optimizer and other entries, and sometimes
the feedback matrices as a list or dict of tensors."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError
from ..escape import printable, short

Tensor = torch.Tensor

STATE_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "model_state", "module", "weights")
FEEDBACK_KEYS = ("feedback", "B", "feedback_matrices", "fb", "feedback_weights", "backward_weights")
META_KEYS = {"epoch": int, "seed": int, "arch": str, "iter": int, "global_step": int, "best_prec1": float}


@dataclass(frozen=True)
class Unwrapped:
    state: dict[str, Tensor]
    feedback: dict[str, Tensor] | list[Tensor] = field(default_factory=dict)
    """A list is in the order of the adapter's feedback layers."""
    meta: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    container: str | None = None
    """The key the state dict was found under (None: the file is the state dict)."""
    hyper_parameters: dict[str, Any] | None = None
    """A Lightning checkpoint's ``hyper_parameters``: the keyword arguments its LightningModule was built with."""


def _is_state_dict(value: object) -> bool:
    return isinstance(value, dict) and bool(value) and all(isinstance(v, Tensor) for v in value.values())


def _is_tensor_list(value: object) -> bool:
    return isinstance(value, list | tuple) and bool(value) and all(isinstance(v, Tensor) for v in value)


def _describe(value: object) -> str:
    return f"a list of {len(value)} tensors" if isinstance(value, list | tuple) else "a dict of tensors"


def unwrap(loaded: dict[Any, Any], path: Path, state_key: str | None, feedback_key: str | None) -> Unwrapped:
    """The state dict, feedback and meta inside a checkpoint that is not format 1."""
    if state_key is None and _is_state_dict(loaded):
        return Unwrapped(state=loaded)
    key = state_key if state_key is not None else _find_state_key(loaded, path)
    if key not in loaded:
        raise InputError(f"has no entry {printable(key)!r} (--state-dict-key); it holds {_keys(loaded)}", path)
    if not _is_state_dict(loaded[key]):
        raise InputError(f"entry {printable(key)!r} is not a state dict (a dict of tensors)", path)
    feedback, used = _feedback(loaded, key, feedback_key, path)
    meta = {k: loaded[k] for k, kind in META_KEYS.items() if isinstance(loaded.get(k), kind)}
    notes = [f"state dict taken from the checkpoint's entry {printable(key)!r}"]
    if used is not None:
        notes.append(f"feedback taken from the entry {printable(used)!r} ({_describe(loaded[used])})")
    for other, value in loaded.items():
        if other not in (key, used) and (_is_tensor_list(value) or _is_state_dict(value)):
            notes.append(f"entry {printable(str(other))!r} ({_describe(value)}) is not used")
    hyper = loaded.get("hyper_parameters")
    hyper = dict(hyper) if isinstance(hyper, dict) and all(isinstance(k, str) for k in hyper) else None
    return Unwrapped(
        state=loaded[key], feedback=feedback, meta=meta, notes=notes, container=str(key), hyper_parameters=hyper
    )


def _keys(loaded: dict[Any, Any]) -> str:
    return ", ".join(short(k) for k in list(loaded)[:8]) + (", ..." if len(loaded) > 8 else "")


def _find_state_key(loaded: dict[Any, Any], path: Path) -> str:
    candidates = [k for k, v in loaded.items() if isinstance(k, str) and _is_state_dict(v)]
    candidates = [k for k in candidates if k not in FEEDBACK_KEYS]
    known = [k for k in STATE_KEYS if k in candidates]
    if len(candidates) == 1:
        return candidates[0]
    if len(known) == 1:  # the others are named in the report as not used
        return known[0]
    if not candidates:
        raise InputError(
            f"holds no state dict (a dict of tensors) under any key; it holds {_keys(loaded)}. If it is a "
            "format-1 bundle it lacks 'fa_audit_format'",
            path,
        )
    listed = ", ".join(printable(k) for k in candidates)
    raise InputError(f"holds several state dicts ({listed}); pass --state-dict-key to say which to audit", path)


def _feedback(
    loaded: dict[Any, Any], state_key: str, feedback_key: str | None, path: Path
) -> tuple[dict[str, Tensor] | list[Tensor], str | None]:
    if feedback_key is not None:
        value = loaded.get(feedback_key)
        if not (_is_tensor_list(value) or _is_state_dict(value)):
            raise InputError(f"has no list or dict of tensors under {printable(feedback_key)!r} (--feedback-key)", path)
        return _as_feedback(value), feedback_key
    for key in FEEDBACK_KEYS:
        value = loaded.get(key)
        if key != state_key and (_is_tensor_list(value) or _is_state_dict(value)):
            return _as_feedback(value), key
    return {}, None


def _as_feedback(value: Any) -> dict[str, Tensor] | list[Tensor]:
    return list(value) if isinstance(value, list | tuple) else dict(value)
