"""Rows drawn at random from the whole pass, kept with the gradients the audit used on them,
for the float64 agreement and the reference proof to check rows no model can predict.

A proof on rows a model can know is not a proof: a backward true only in the first batch,
only for batches of a few rows, only in float64, or only for the highest-loss samples
passed checks made on the first batch's highest-loss rows in float64, and every later
batch's "BP gradient" was the method's own credit (cos 1.000, TRUST). The rows here are a
uniform sample without replacement of every row of the pass (the smallest of random keys),
the keys drawn from fresh OS entropy, not from the audit's seed: no file, seed or model code
can tell which rows will be checked. Their float32 gradients are the ones the audit computed
in its own batches, so a backward that depends on the batch, its size or the precision
disagrees with the float64 recomputation of the same rows."""

from __future__ import annotations

import secrets

import torch

Tensor = torch.Tensor

SPOT_ROWS = 32
"""Rows kept: an FA-like row among them moves the agreement's mean by 1/32 of its distance
from 1, thirty times the 0.999 threshold's room; a backward wrong on a tenth of the rows,
enough to move a cosine by about as much, escapes all 32 with probability 3 %."""
SPOT_BYTES = 64 << 20
"""The kept gradients' memory cap (a ResNet-18's ten states at 65,536 units: 12 rows)."""
MIN_ROWS = 8


class SpotRows:
    """The kept rows: inputs, labels and every h_l's gradient."""

    def __init__(self) -> None:
        self.generator = torch.Generator().manual_seed(secrets.randbits(63))
        self.keys = torch.empty(0, dtype=torch.float64)
        self.x: Tensor | None = None
        self.y: Tensor | None = None
        self.grads: list[Tensor] = []
        self.limit = SPOT_ROWS

    def add(self, x: Tensor, y: Tensor, grads: list[Tensor]) -> None:
        """Offer one batch's rows; only the rows that stay are copied."""
        keys = torch.rand(len(y), generator=self.generator, dtype=torch.float64)
        if self.x is None:
            row_bytes = sum(g[0].numel() * g.element_size() for g in grads) or 1
            self.limit = max(MIN_ROWS, min(SPOT_ROWS, SPOT_BYTES // row_bytes))
        held = len(self.keys)
        order = torch.cat([self.keys, keys]).argsort()[: self.limit]
        old, new = order[order < held], order[order >= held] - held
        self.keys = torch.cat([self.keys[old], keys[new]])
        take = new.to(x.device)
        self.x = x[take] if self.x is None else torch.cat([self.x[old.to(x.device)], x[take]])
        self.y = y[take] if self.y is None else torch.cat([self.y[old.to(y.device)], y[take]])
        olds = self.grads or [g[:0] for g in grads]
        self.grads = [torch.cat([o[old.to(o.device)], g[new.to(g.device)]]) for o, g in zip(olds, grads, strict=True)]
