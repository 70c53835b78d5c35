"""Shared fixtures: the bundled sample checkpoints and a cache of their audits."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from fa_audit.api import audit
from fa_audit.report import AuditReport

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_checkpoints"

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def samples() -> Path:
    return SAMPLES


@pytest.fixture(scope="session")
def audited() -> Callable[..., AuditReport]:
    """audited("dfa", baseline=True) -> the report, computed once per session."""
    cache: dict[tuple[Any, ...], AuditReport] = {}

    def get(name: str, baseline: bool = False, **kwargs: Any) -> AuditReport:
        kwargs.setdefault("device", "cpu")  # the same numbers on a machine that has a GPU
        key = (name, baseline, tuple(sorted(kwargs.items())))
        if key not in cache:
            base = SAMPLES / "frozen.pt" if baseline else None
            path = SAMPLES / name if "." in name else SAMPLES / f"{name}.pt"
            cache[key] = audit(path, baseline=base, **kwargs)
        return cache[key]

    return get


def load_sample(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = torch.load(SAMPLES / f"{name}.pt", weights_only=True)
    return loaded
