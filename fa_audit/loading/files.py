"""Safe file access shared by every loader: one sentence per failure, hashes of inputs."""

from __future__ import annotations

import hashlib
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError


def check_readable(path: Path) -> None:
    if not path.exists():
        raise InputError("does not exist", path)
    if path.is_dir():
        raise InputError("is a directory, not a file", path)
    try:
        with path.open("rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise InputError(f"cannot be read ({exc.strerror or exc.__class__.__name__})", path) from None
    if path.stat().st_size == 0:
        raise InputError("is empty (0 bytes)", path)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_zip_integrity(path: Path) -> None:
    """torch.load does not verify the CRC-32 of a .pt archive's records, so a flipped bit
    in a weight would load silently as a different model; check them here."""
    try:
        if not zipfile.is_zipfile(path):
            return  # the legacy format carries no checksum
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, RuntimeError) as exc:
        # RuntimeError: a record flagged as encrypted; torch never writes one
        raise InputError(
            f"is not a readable PyTorch file, truncated or corrupt ({exc.__class__.__name__})", path
        ) from None
    if bad is not None:
        raise InputError(f"is corrupt: its record {bad!r} fails its CRC-32 check", path)


def torch_load_safely(path: Path, *, mmap: bool = False) -> Any:
    """torch.load with weights_only=True: a file that needs real unpickling is refused."""
    check_readable(path)
    check_zip_integrity(path)
    try:
        return torch.load(path, weights_only=True, map_location="cpu", mmap=mmap)
    except pickle.UnpicklingError as exc:
        culprit = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if culprit is None:  # not a hostile pickle, just bytes that are no pickle at all
            raise InputError("is not a readable PyTorch file, truncated or corrupt", path) from None
        raise InputError(
            f"needs arbitrary unpickling (it imports {culprit.group(1)}), which fa-audit refuses because a pickle "
            "can run code; re-save it as a dict of tensors, lists and numbers (format 1) or as .safetensors",
            path,
        ) from None
    except Exception as exc:  # corrupt zip, truncated stream, legacy format: all "unreadable"
        if mmap:
            return torch_load_safely(path, mmap=False)
        raise InputError(
            f"is not a readable PyTorch file, truncated or corrupt ({exc.__class__.__name__})", path
        ) from None


def safetensors_error(path: Path, exc: Exception) -> InputError:
    first = str(exc).splitlines()[0][:160] if str(exc) else exc.__class__.__name__
    return InputError(f"is not a valid safetensors file ({first})", path)
