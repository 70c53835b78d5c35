"""Checkpoint bundles (docs/format.md): format-1 .pt, .safetensors with metadata, bare state
dicts with --arch/--arch-config/--method, and feedback from a sidecar or --feedback."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from model_adapters import Adapter

from ..errors import InputError
from ..escape import printable, short
from .containers import Unwrapped, unwrap
from .files import check_readable, check_storage, safetensors_error, sha256, torch_load_safely
from .keys import Rename

Tensor = torch.Tensor
FORMAT = 1


@dataclass(frozen=True)
class Overrides:
    """What the command line says about a checkpoint (needed for bare state dicts)."""

    arch: str | None = None
    arch_config: dict[str, Any] | None = None
    method: str | None = None
    feedback: Path | None = None
    state_dict_key: str | None = None
    key_prefix: str | None = None
    feedback_key: str | None = None
    renames: tuple[Rename, ...] = ()
    convention: str | None = None
    hidden: tuple[str, ...] = ()
    deep: tuple[str, ...] = ()
    bp_layers: tuple[str, ...] = ()
    batch_dim: int = 0
    feedback_attr: str | None = None


@dataclass(frozen=True)
class Bundle:
    """A checkpoint with everything needed to audit it, in memory."""

    arch: str
    arch_config: dict[str, Any]
    method: str | None
    """None until a feedback convention or --method fixes it (see :func:`fa_audit.adapt.fit_keys.fit_bundle`)."""
    state_dict: dict[str, Tensor]
    feedback: dict[str, Tensor] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    feedback_path: Path | None = None
    """Where the feedback came from, when it was a separate file."""
    digests: dict[Path, str] = field(default_factory=dict)
    """SHA-256 of each file read, taken before it was read (see :func:`verify_unchanged`)."""
    feedback_list: tuple[Tensor, ...] = ()
    """Feedback saved as a list: in the order of the method's feedback layers."""
    loading: dict[str, Any] = field(default_factory=dict)
    """What was done to the file's keys to read it (and, once fitted, to fit the adapter), for the report."""
    notes: tuple[str, ...] = ()
    options: Overrides = field(default_factory=lambda: Overrides())
    """What the command line said about the file (its renames, convention, hidden and deep modules)."""
    builder: Adapter | None = None
    """What builds the model when ``arch`` names no registered adapter (a model in memory)."""


@dataclass(frozen=True)
class FittedBundle(Bundle):
    """A bundle whose keys were fitted to its adapter (:func:`fa_audit.adapt.fit_keys.fit_bundle`):
    the weights under the adapter's names, the method fixed, a convention's entries split off."""

    found: dict[str, Tensor] = field(default_factory=dict)
    """State-dict entries a feedback convention claimed, split off the weights."""
    skeleton: dict[str, Tensor] = field(default_factory=dict)
    """The architecture's state dict, keys and shapes only (meta tensors), as fitting found it:
    :func:`fa_audit.adapt.build_model` checks the weights against it without building it again."""


PT_SUFFIXES = (".pt", ".pth", ".pth.tar", ".tar", ".ckpt", ".t7", ".bin")
"""Files torch.save writes, under the names training code gives them."""


def is_torch_file(path: Path) -> bool:
    return path.name.endswith(PT_SUFFIXES)


def sidecar_path(path: Path) -> Path:
    return path.with_name(f"{path.stem}.feedback.safetensors")


def _taken_by(arch: str, hyper: Mapping[str, Any], path: Path) -> tuple[dict[str, Any], list[str]]:
    """The hyper_parameters the ``module:`` class takes, and the names of the others."""
    from model_adapters import AdapterConfigError, get_adapter
    from model_adapters.module_path import ModulePathAdapter

    adapter = get_adapter(arch)
    if not isinstance(adapter, ModulePathAdapter):
        return dict(hyper), []
    try:
        return adapter.accepted(hyper)
    except AdapterConfigError as exc:
        raise InputError(f"cannot build {arch}: {exc}", path) from None


MAX_META_DEPTH = 32
"""meta is a few levels of settings; deeper is refused before anything walks it recursively."""


def _depth(value: Any) -> int:
    """How deeply ``value``'s dicts and lists nest, walked without recursion (and stopping past the cap)."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, level = todo.pop()
        if isinstance(item, dict | list | tuple):
            deepest = max(deepest, level)
            if level <= MAX_META_DEPTH:
                todo.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def load_bundle(path: str | Path, overrides: Overrides = Overrides()) -> Bundle:
    path = Path(path)  # a str from the API, as docs/api.md shows it
    check_readable(path)
    digests = {path: sha256(path)}
    unwrapped = Unwrapped(state={})
    if path.suffix == ".safetensors":
        fields_, state, feedback = _read_safetensors(path)
    elif is_torch_file(path):
        fields_, unwrapped = _read_pt(path, overrides)
        state, feedback = unwrapped.state, unwrapped.feedback if isinstance(unwrapped.feedback, dict) else {}
    else:
        raise InputError(f"has an unknown extension: expected {', '.join(PT_SUFFIXES)} or .safetensors", path)
    arch = overrides.arch or fields_.get("arch")
    config = overrides.arch_config if overrides.arch_config is not None else fields_.get("arch_config")
    method = overrides.method or fields_.get("method")
    recorded = fields_.get("method")
    if overrides.method and recorded is not None and str(recorded) != overrides.method:
        raise InputError(
            f"records that it was trained with {short(recorded)}, but --method {short(overrides.method)} was given: "
            "a credit the checkpoint was not trained with gives a Γ that means nothing (bp's is 1 by definition); "
            "drop --method",
            path,
        )
    notes = list(unwrapped.notes)
    if config is None and str(arch).startswith("module:"):  # the user's own class or factory: its defaults
        config = unwrapped.hyper_parameters or {}
        if unwrapped.hyper_parameters:
            config, dropped = _taken_by(str(arch), config, path)
            without = f", without {', '.join(printable(k) for k in dropped)}, which it does not take" if dropped else ""
            notes.append(f"arch_config taken from the checkpoint's hyper_parameters (Lightning){without}")
    if arch is None or config is None:
        lacking = [flag for flag, v in (("--arch", arch), ("--arch-config", config)) if v is None]
        raise InputError(f"is a bare state dict; pass {' and '.join(lacking)} to say what it is", path)
    if not isinstance(config, dict):
        raise InputError(f"arch_config must be a mapping, not a {type(config).__name__}", path)
    if (odd := next((k for k in config if not isinstance(k, str)), None)) is not None:
        raise InputError(f"arch_config key {short(odd)} is not a string", path)
    if str(arch).startswith("module:") and overrides.arch != arch:
        raise InputError(f"names Python code to import ({arch}); pass --arch {arch} to confirm you trust it", path)
    feedback_path = overrides.feedback or (sidecar_path(path) if sidecar_path(path).exists() else None)
    if feedback_path is not None:
        check_readable(feedback_path)
        digests[feedback_path] = sha256(feedback_path)
        own, feedback = feedback, read_feedback_file(feedback_path, overrides.convention)
        if overrides.feedback is None and own and not _same_tensors(own, feedback):
            raise InputError(
                f"carries feedback weights that differ from those in the sidecar {feedback_path.name} beside it; "
                "pass --feedback to say which to audit",
                path,
            )
    listed = tuple(unwrapped.feedback) if isinstance(unwrapped.feedback, list) else ()
    _check_tensors(state, path, "state_dict")
    _check_tensors(feedback, feedback_path or path, "feedback")
    _check_tensors({f"feedback[{i}]": t for i, t in enumerate(listed)}, path, "feedback")
    return Bundle(
        arch=str(arch),
        arch_config=dict(config),
        method=None if method is None else str(method),
        state_dict=state,
        feedback=feedback,
        meta={**unwrapped.meta, **(fields_.get("meta") or {})},
        path=path,
        feedback_path=feedback_path,
        digests=digests,
        feedback_list=listed,
        options=overrides,
        loading={} if unwrapped.container is None else {"container": unwrapped.container},
        notes=tuple(notes),
    )


def _same_tensors(a: dict[str, Tensor], b: dict[str, Tensor]) -> bool:
    return a.keys() == b.keys() and all(
        a[k].shape == b[k].shape and a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a
    )


def read_feedback_file(path: Path, convention: str | None = None) -> dict[str, Tensor]:
    """Feedback keyed by layer name; for ``tinydfa``, its one matrix (alone, or the one
    tensor of a dict) under the key ``feedback_matrix``."""
    check_readable(path)
    loaded = _safetensors_tensors(path) if path.suffix == ".safetensors" else torch_load_safely(path)
    if convention == "tinydfa":
        tensors = list(loaded.values()) if isinstance(loaded, dict) else [loaded]
        if len(tensors) != 1 or not isinstance(tensors[0], Tensor):
            raise InputError("must hold TinyDFA's one feedback matrix (torch.save(dfa.feedback_matrix, ...))", path)
        return {"feedback_matrix": tensors[0]}
    if not isinstance(loaded, dict):
        raise InputError("must hold a dict of feedback tensors keyed by layer name", path)
    return loaded


def _read_pt(path: Path, overrides: Overrides) -> tuple[dict[str, Any], Unwrapped]:
    loaded = torch_load_safely(path)
    if not isinstance(loaded, dict):
        raise InputError(f"holds a {type(loaded).__name__}, not a checkpoint dict", path)
    if "fa_audit_format" not in loaded:
        return {}, unwrap(loaded, path, overrides.state_dict_key, overrides.feedback_key)
    if loaded["fa_audit_format"] != FORMAT:
        raise InputError(
            f"has fa_audit_format {short(loaded['fa_audit_format'])}; this fa-audit reads format {FORMAT}", path
        )
    for key, kind in (("arch", str), ("arch_config", dict), ("method", str), ("state_dict", dict)):
        if key not in loaded:
            raise InputError(f"lacks the required key {key!r}", path)
        if not isinstance(loaded[key], kind):
            raise InputError(f"key {key!r} must be a {kind.__name__}, not {type(loaded[key]).__name__}", path)
    for key in ("feedback", "meta"):
        if loaded.get(key) is not None and not isinstance(loaded[key], dict):
            raise InputError(f"key {key!r} must be a dict", path)
    if _depth(loaded.get("meta") or {}) > MAX_META_DEPTH:
        raise InputError(f"key 'meta' is nested more than {MAX_META_DEPTH} levels deep", path)
    return loaded, Unwrapped(state=loaded["state_dict"], feedback=loaded.get("feedback") or {})


def _safetensors_tensors(path: Path, prefix: str = "") -> dict[str, Tensor]:
    try:
        with safe_open(str(path), framework="pt") as fh:
            return {k[len(prefix) :]: fh.get_tensor(k) for k in fh.keys() if k.startswith(prefix)}  # noqa: SIM118
    except Exception as exc:
        raise safetensors_error(path, exc) from None


def _read_safetensors(path: Path) -> tuple[dict[str, Any], dict[str, Tensor], dict[str, Tensor]]:
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
            keys = list(fh.keys())
    except Exception as exc:
        raise safetensors_error(path, exc) from None
    if "fa_audit_format" not in metadata:
        return {}, _safetensors_tensors(path), {}
    if metadata["fa_audit_format"] != str(FORMAT):
        raise InputError(
            f"has fa_audit_format {short(metadata['fa_audit_format'])}; this fa-audit reads format {FORMAT}", path
        )
    fields_: dict[str, Any] = {}
    for key in ("arch", "arch_config", "method"):
        if key not in metadata:
            raise InputError(f"lacks the required metadata key {key!r}", path)
    fields_["arch"], fields_["method"] = metadata["arch"], metadata["method"]
    for key in ("arch_config", "meta"):
        try:
            fields_[key] = json.loads(metadata[key]) if key in metadata else {}
        except json.JSONDecodeError:
            raise InputError(f"metadata {key!r} is not valid JSON", path) from None
        except RecursionError:
            raise InputError(f"metadata {key!r} is nested too deep to be read", path) from None
        if _depth(fields_[key]) > MAX_META_DEPTH:
            raise InputError(f"metadata {key!r} is nested more than {MAX_META_DEPTH} levels deep", path)
        if not isinstance(fields_[key], dict):
            raise InputError(f"metadata {key!r} must be a JSON object", path)
    stray = [k for k in keys if not k.startswith(("model.", "feedback."))]
    if stray:
        raise InputError(f"has tensors outside model.* and feedback.*: {', '.join(stray[:3])}", path)
    return fields_, _safetensors_tensors(path, "model."), _safetensors_tensors(path, "feedback.")


FLOAT32_MAX = torch.finfo(torch.float32).max


def _check_tensors(tensors: Mapping[Any, Any], path: Path, what: str) -> None:
    """String keys; tensors no larger than their storage; finite values that survive the
    float32 model (a float64 value beyond its range would become Inf in the audit)."""
    for name, value in tensors.items():
        if not isinstance(name, str):
            raise InputError(
                f"{what} has a key of type {type(name).__name__} ({short(name)}); keys must be strings", path
            )
        if not isinstance(value, torch.Tensor):
            raise InputError(f"{what} entry {printable(name)!r} is a {type(value).__name__}, not a tensor", path)
        check_storage(printable(name), value, path, what)
        if what == "state_dict" and not value.is_floating_point() and not value.is_complex():
            continue  # BatchNorm's num_batches_tracked, masks: loaded as they are
        if not value.is_floating_point():
            raise InputError(
                f"{what} tensor {printable(name)!r} has dtype {value.dtype}, expected a floating-point dtype", path
            )
        if not torch.isfinite(value).all():
            raise InputError(f"{what} tensor {printable(name)!r} contains NaN or Inf", path)
        if value.dtype == torch.float64 and value.numel() and float(value.abs().max()) > FLOAT32_MAX:
            raise InputError(
                f"{what} tensor {printable(name)!r} holds values beyond the float32 range the model runs in", path
            )


def checkpoint_dtype(state: Mapping[str, Tensor]) -> str:
    """The narrowest floating dtype among the weights, to detect half-precision checkpoints."""
    dtypes = {str(t.dtype).removeprefix("torch.") for t in state.values() if t.is_floating_point()}
    for name in ("float16", "bfloat16", "float32", "float64"):  # detect only: never computed in
        if name in dtypes:
            return name
    return "float32"
