"""Shared fixtures: the bundled sample checkpoints and a cache of their audits."""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from fa_audit import ExitCode
from fa_audit.api import audit
from fa_audit.report import AuditReport

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_checkpoints"
DRAWN_AT_RANDOM = {"grad_check", "input_grad_check", "fp64_agree_spot"}
"""Report fields from rows drawn with fresh entropy (the reference proof's): they differ between
runs (≈ 1e-10 … 1e-5), and the float64 agreement over those rows in its 13th digit."""


def repeatable(doc: Any) -> Any:
    """A report (or part of one) without the fields drawn at random, the float64 agreement to 9 digits."""
    if isinstance(doc, dict):
        return {
            k: round(v, 9) if "fp64_agree" in k and isinstance(v, float) else repeatable(v)
            for k, v in doc.items()
            if k not in DRAWN_AT_RANDOM
        }
    if isinstance(doc, list):
        return [repeatable(v) for v in doc]
    return doc


torch.set_num_threads(2)


@pytest.fixture(scope="session")
def samples() -> Path:
    return SAMPLES


@pytest.fixture(scope="session")
def audited() -> Callable[..., AuditReport]:
    """audited("dfa", baseline=True) -> the report, computed once per session (``baseline``:
    True for frozen.pt, or the name of another sample)."""
    cache: dict[tuple[Any, ...], AuditReport] = {}

    def get(name: str, baseline: bool | str = False, **kwargs: Any) -> AuditReport:
        kwargs.setdefault("device", "cpu")  # the same numbers on a machine that has a GPU
        key = (name, baseline, tuple(sorted(kwargs.items())))
        if key not in cache:
            base = SAMPLES / f"{'frozen' if baseline is True else baseline}.pt" if baseline else None
            path = SAMPLES / name if "." in name else SAMPLES / f"{name}.pt"
            cache[key] = audit(path, baseline=base, **kwargs)
        return cache[key]

    return get


def load_sample(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = torch.load(SAMPLES / f"{name}.pt", weights_only=True)
    return loaded


def user_module(folder: Path, name: str, source: str) -> ModuleType:
    """``source`` saved as ``folder/name.py`` (where the CLI, run from ``folder``, imports it
    as a user's code) and imported here, the folder importable only meanwhile."""
    (folder / f"{name}.py").write_text(source)
    sys.modules.pop(name, None)
    sys.path.insert(0, str(folder))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(folder))


def audited_in(folder: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> dict[str, Any]:
    """``fa-audit run ARGS --json -`` from ``folder`` (where a user's model module imports), the
    report of an audit that ran: WALK BACK or INCOMPLETE, never an error."""
    from .cli_runner import run

    monkeypatch.chdir(folder)
    code, out, err = run("run", *args, "--json", "-")
    assert code in (ExitCode.WALK_BACK, ExitCode.INCOMPLETE), err
    report: dict[str, Any] = json.loads(out)
    return report
