"""The torchmetrics way into an audit: the validation step the user already runs hands each
batch to :meth:`AuditAccumulator.update`, and :meth:`~AuditAccumulator.compute` audits the model
on them, so an epoch's audit needs no second pass over the data loader (its loading, its
augmentation, its workers). The audit's own forward and backward still run once per batch, on the
model's true-gradient twin, at ``compute``: the gradients it measures are not the validation
step's (which runs without them, and on the user's FA layers), and the null draws and the first
batch's float64 work need the batches kept anyway."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..errors import InputError
from ..loading.data import GATHER_BYTES
from ..report import AuditReport
from . import audit_module

Tensor = torch.Tensor


class AuditAccumulator:
    """``update(model, x, y)`` in each validation step, ``compute()`` at the epoch's end (before
    the weights change), ``reset()`` after it; the keyword arguments are :func:`audit_module`'s."""

    def __init__(self, method: str, *, feedback: Mapping[str, Tensor] | None = None, **settings: Any) -> None:
        self.method, self.feedback, self.settings = method, feedback, settings
        self.model: nn.Module | None = None
        self.batches: list[tuple[Tensor, Tensor]] = []
        self.bytes = 0

    def update(self, model: nn.Module, x: Tensor, y: Tensor) -> None:
        """Keep this batch (detached, on the CPU) for the audit of ``model``."""
        if self.model is not None and model is not self.model:
            raise InputError("AuditAccumulator.update was given another model than before: reset() between models")
        if not (isinstance(x, Tensor) and isinstance(y, Tensor)):
            raise InputError(
                f"AuditAccumulator.update takes tensors x and y, not {type(x).__name__}, {type(y).__name__}"
            )
        self.bytes += x.numel() * x.element_size() + y.numel() * y.element_size()
        if self.bytes > GATHER_BYTES:
            raise InputError(
                f"AuditAccumulator holds more than {GATHER_BYTES >> 20} MiB of batches: update it with a part of the "
                "validation set (every n-th batch)"
            )
        self.model = model
        self.batches.append((x.detach().cpu(), y.detach().cpu()))

    def compute(self) -> AuditReport:
        """The audit of the model on every batch given since the last reset."""
        if self.model is None:
            raise InputError("AuditAccumulator.compute was called before any update")
        return audit_module(self.model, self.batches, method=self.method, feedback=self.feedback, **self.settings)

    def reset(self) -> None:
        self.model, self.batches, self.bytes = None, [], 0
