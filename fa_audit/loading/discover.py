"""Which files ``fa-audit run`` audits when it is given a directory or a glob."""

from __future__ import annotations

import glob
import subprocess
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


STAGED_SUFFIXES = (".pt", ".pth", ".ckpt")


def staged_checkpoints(baseline: Path | None) -> list[Path]:
    """The checkpoints git has staged (added, copied, modified or renamed), read from git
    itself, so that no file name ever passes through the command line as an argument (a file
    named ``--data=module:evil:f.pt`` would be an option there); the baseline is left out."""
    try:
        done = subprocess.run(
            ["git", "diff", "--cached", "--name-only", "-z", "--diff-filter=ACMR"],
            capture_output=True, timeout=60, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InputError(f"--staged needs git, which could not be run ({exc.__class__.__name__})") from None
    if done.returncode != 0:
        raise InputError("--staged needs a git repository: git diff --cached failed here")
    top = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=False)
    root = Path(top.stdout.strip()) if top.returncode == 0 else Path.cwd()
    names = [n for n in done.stdout.decode("utf-8", "surrogateescape").split("\0") if n.endswith(STAGED_SUFFIXES)]
    skip = None if baseline is None else baseline.resolve()
    return [root / n for n in names if (root / n).resolve() != skip]


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
