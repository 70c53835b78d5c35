"""Audit a LightningModule as it trains: ``Trainer(callbacks=[AuditCallback("dfa")])``.

At the end of every n-th training epoch the module is audited in memory (its true-gradient
twin, as :func:`fa_audit.audit_module` does), the numbers are logged through the module's own
logging path (``pl_module.log_dict``), so they reach the trainer's loggers and
``trainer.callback_metrics``, where ``ModelCheckpoint(monitor=...)`` and ``EarlyStopping`` find
them (the keys: :meth:`fa_audit.report.AuditReport.scalars`), each report is appended to ``log_path`` as one
JSON line (read back by ``fa-audit run LOG.jsonl``), and training stops when a check named
in ``stop_on`` fails. Needs ``pip install 'fa-audit[lightning]'``; ``import fa_audit`` never
imports this module."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from ..config import Thresholds
from ..report import AuditReport, Status
from ..report.trajectories import CHECKS
from . import audit_module
from .audit_log import AuditLog

NO_EVAL_DATA = "AuditCallback needs eval data: pass dataloader= or give the trainer a validation loader"


class AuditCallback(pl.Callback):
    """``method`` and ``hidden`` as for :func:`fa_audit.audit_module`; ``dataloader`` defaults
    to the trainer's validation loader; ``reports`` holds every report of the run."""

    def __init__(
        self,
        method: str,
        hidden: Sequence[str] | None = None,
        feedback: Mapping[str, torch.Tensor] | None = None,
        dataloader: Iterable[Any] | None = None,
        every_n_epochs: int = 1,
        baseline_accuracy: float | None = None,
        thresholds: Thresholds | None = None,
        log_path: str | Path | None = None,
        stop_on: Sequence[str] | None = None,
        loss: str | None = None,
    ) -> None:
        unknown = sorted(set(stop_on or ()) - set(CHECKS))
        if unknown:
            raise ValueError(f"stop_on names no check: {', '.join(unknown)} (the checks are {', '.join(CHECKS)})")
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be at least 1, not {every_n_epochs}")
        self.method, self.hidden, self.feedback = method, hidden, feedback
        self.dataloader, self.every_n_epochs = dataloader, every_n_epochs
        self.baseline_accuracy, self.thresholds = baseline_accuracy, thresholds
        self.audit_log = None if log_path is None else AuditLog(log_path)
        self.stop_on = tuple(stop_on or ())
        self.loss = loss
        self.reports: list[AuditReport] = []

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """No eval data is refused here, before the first epoch trains, not after it."""
        if stage != "fit" or self.dataloader is not None:
            return
        source = getattr(getattr(trainer.fit_loop.epoch_loop, "val_loop", None), "_data_source", None)
        if source is not None and (source.instance is None or not source.is_defined()):
            raise ValueError(NO_EVAL_DATA)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch  # counted from 0, as Lightning counts it (epoch=0.ckpt)
        if (epoch + 1) % self.every_n_epochs:
            return
        # fast_dev_run (True or a number of batches) checks that a run works: a bounded audit, no log
        quick = int(getattr(trainer, "fast_dev_run", 0) or 0)  # set by Trainer.__init__, not declared
        batches = self._batches(trainer)
        report = audit_module(
            pl_module,
            batches if not quick else itertools.islice(batches, quick),
            method=self.method,
            feedback=self.feedback,
            hidden=self.hidden,
            thresholds=self.thresholds,
            baseline_accuracy=self.baseline_accuracy,
            device=str(pl_module.device),
            loss=self.loss,
        )
        report = replace(report, meta={**report.meta, "epoch": epoch, "global_step": trainer.global_step})
        self.reports.append(report)
        # every rank holds the merged report already: nothing to reduce across ranks
        pl_module.log_dict(report.scalars(), on_step=False, on_epoch=True, sync_dist=False)
        if self.audit_log is not None and trainer.is_global_zero and not quick:  # every rank holds the report
            self.audit_log.append(report)
        if any(report.check(name).status is Status.FAIL for name in self.stop_on):
            trainer.should_stop = True

    def _batches(self, trainer: pl.Trainer) -> Iterable[Any]:
        if self.dataloader is not None:
            return self.dataloader
        loaders: Any = trainer.val_dataloaders
        if loaders is None:
            raise ValueError(NO_EVAL_DATA)
        first: Iterable[Any] = loaders[0] if isinstance(loaders, list | tuple) else loaders
        return first
