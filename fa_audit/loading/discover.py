"""Which files ``fa-audit run`` audits when it is given a directory or a glob."""

from __future__ import annotations

import glob
from pathlib import Path

from safetensors import safe_open

from ..errors import InputError
from .checkpoint import is_torch_file


def is_bundle(path: Path) -> bool:
    """A file torch.save wrote (.pt, .pth, .ckpt, ...), or a .safetensors file whose header names fa_audit_format (eval
    data and feedback sidecars do not). An unreadable header counts as a bundle, so that
    its error is reported rather than the file skipped."""
    if is_torch_file(path):
        return True
    if path.suffix != ".safetensors" or path.name.endswith(".feedback.safetensors"):
        return False
    try:
        with safe_open(str(path), framework="pt") as fh:
            return "fa_audit_format" in (fh.metadata() or {})
    except Exception:
        return True


def expand_checkpoints(given: list[Path]) -> list[Path]:
    """Files as given; a directory becomes its bundles (not recursing); a pattern with
    * ? or [ is expanded when the shell did not. Duplicates are dropped."""
    found: list[Path] = []
    for path in given:
        if any(ch in str(path) for ch in "*?[") and not path.exists():
            matches = [Path(m) for m in sorted(glob.glob(str(path)))]
            if not matches:
                raise InputError("matches no file", path)
            found += [m for m in matches if m.is_file() and is_bundle(m)]
        elif path.is_dir():
            inside = sorted(p for p in path.iterdir() if p.is_file() and is_bundle(p))
            if not inside:
                raise InputError("is a directory that holds no checkpoint (.pt, .pth or .safetensors bundle)", path)
            found += inside
        else:
            found.append(path)
    return list(dict.fromkeys(found))
