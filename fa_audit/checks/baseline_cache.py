"""The fitted baseline's cache. It holds work, never a verdict: the interface weights a fit
trained, which the audit loads into the seeded architecture and evaluates on the eval data
itself, so an entry cannot state an accuracy. A directory is used only when it belongs to
the user and nobody else can write to it (the rule ssh and gpg apply to their files); an
entry is opened without following links, read only up to the size its weights need, and
written through an exclusively created temporary file of unpredictable name."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes

from ..escape import printable

Tensor = torch.Tensor

HEADER_ALLOWANCE = 1 << 20
"""Bytes an entry may hold beyond its tensors' (the safetensors header names each one)."""


def cache_dir(given: Path | None) -> Path:
    """``--cache-dir``, else ``$FA_AUDIT_CACHE``, else the user cache directory."""
    if given is not None:
        return given
    if os.environ.get("FA_AUDIT_CACHE"):
        return Path(os.environ["FA_AUDIT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fa-audit" / "baselines"


@dataclass(frozen=True)
class Entry:
    """What a cache lookup found: the weights and their SHA-256, or why none were used."""

    weights: dict[str, Tensor] | None
    sha256: str | None = None
    note: str | None = None


def untrusted(st: os.stat_result) -> str | None:
    """Why a file or directory with this status may not be trusted, or None."""
    if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
        return f"it belongs to user id {st.st_uid}, not to you"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"others can write to it (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def _folder_problem(folder: Path) -> str | None:
    try:
        st = folder.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"it cannot be read ({exc.strerror})"
    if not stat.S_ISDIR(st.st_mode):
        return "it is not a directory"
    return untrusted(st)


def lookup(entry: Path, expected: Mapping[str, Tensor], key: str) -> Entry:
    """The weights stored at ``entry`` when it is trusted and holds exactly the tensors of
    ``expected`` (names, shapes, dtypes; finite) for ``key``; otherwise why it was not used."""
    problem = _folder_problem(entry.parent)
    if problem is not None:
        return Entry(None, note=_unused(entry.parent, problem))
    try:
        fd = os.open(entry, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        return Entry(None)
    except OSError as exc:  # a link planted at the entry's name (O_NOFOLLOW), a permission
        return Entry(None, note=_refitted(entry, f"it cannot be opened ({exc.strerror})"))
    bound = sum(t.numel() * t.element_size() for t in expected.values()) + HEADER_ALLOWANCE
    with os.fdopen(fd, "rb") as fh:
        problem = _file_problem(os.fstat(fh.fileno()), bound)
        data = fh.read(bound) if problem is None else b""
    weights, problem = (None, problem) if problem is not None else _weights(data, expected, key)
    if weights is None:
        return Entry(None, note=_refitted(entry, problem or "it cannot be read"))
    return Entry(weights, hashlib.sha256(data).hexdigest())


def _file_problem(st: os.stat_result, bound: int) -> str | None:
    if not stat.S_ISREG(st.st_mode):
        return "it is not a regular file"
    if st.st_size > bound:
        return f"it holds {st.st_size} bytes, more than its weights need ({bound})"
    return untrusted(st)


def _refitted(entry: Path, problem: str) -> str:
    return f"the cache entry {printable(str(entry))} was not used and the baseline was fitted again: {problem}"


def _weights(data: bytes, expected: Mapping[str, Tensor], key: str) -> tuple[dict[str, Tensor] | None, str | None]:
    """The entry's tensors when they are exactly ``expected``'s for ``key``, else why not."""
    try:
        weights = load_bytes(data)
    except (SafetensorError, ValueError, RuntimeError):
        return None, "it is not a safetensors file"
    if _metadata(data).get("key") != key:
        return None, "it was written for another fit"
    if set(weights) != set(expected):
        return None, "it does not hold this architecture's interface weights"
    for name, value in weights.items():
        want = expected[name]
        if value.shape != want.shape or value.dtype != want.dtype:
            got, need = f"{list(value.shape)} ({value.dtype})", f"{list(want.shape)} ({want.dtype})"
            return None, f"its {printable(name)} is {got} where {need} is needed"
        if value.is_floating_point() and not torch.isfinite(value).all():
            return None, f"its {printable(name)} holds NaN or Inf"
    return weights, None


def _metadata(data: bytes) -> dict[str, str]:
    try:
        size = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + size])
        meta = header.get("__metadata__", {})
    except (ValueError, AttributeError):
        return {}
    return meta if isinstance(meta, dict) else {}


def store(entry: Path, weights: Mapping[str, Tensor], key: str) -> str | None:
    """Write ``weights`` to ``entry`` atomically; None, or why the cache was not written (a
    cache that cannot be written only costs a refit next time)."""
    folder = entry.parent
    problem = _folder_problem(folder)
    if problem is not None:
        return _unused(folder, problem)
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        problem = _folder_problem(folder)
        if problem is not None:
            return _unused(folder, problem)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".fa-audit-", suffix=".tmp")  # O_EXCL: never through a link
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(save_bytes({k: v.detach().cpu().contiguous() for k, v in weights.items()}, {"key": key}))
            os.replace(tmp, entry)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    except OSError as exc:
        return f"the fitted baseline was not cached in {printable(str(folder))} ({exc.strerror})"
    return None


def _unused(folder: Path, problem: str) -> str:
    return (
        f"the cache directory {printable(str(folder))} was not used: {problem}; a cache that others can "
        "write to could plant the baseline, so the baseline was fitted here (--cache-dir names another)"
    )
