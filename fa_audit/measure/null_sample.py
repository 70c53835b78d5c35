"""The eval samples the null draws are measured on. K draws cost K credit passes, so the
null uses at most ``null_calibration.samples`` of them, spread evenly over the eval set
(an eval set sorted by class still gives every class its share), gathered into chunks
of about a batch so that each credit pass runs on full-sized matrices."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from ..methods import Batch

Tensor = torch.Tensor


def null_positions(total: int, cap: int) -> Tensor | None:
    """Sorted positions of ``cap`` of ``total`` samples, evenly spread; None for all."""
    if cap <= 0 or cap >= total:
        return None
    return torch.arange(cap, dtype=torch.int64) * total // cap


class NullSample:
    """Collects the null's rows from the stream of batches and hands them out in chunks."""

    def __init__(self, total: int, cap: int) -> None:
        self.positions = null_positions(total, cap)
        self.pending: list[Batch] = []
        self.count = 0

    def add(self, batch: Batch, start: int) -> Iterator[Batch]:
        """Keep the rows of ``batch`` (whose first sample is number ``start``) that the
        null uses; yield a chunk once a batch's worth is pending."""
        picked = batch if self.positions is None else _take_rows(batch, self._rows_of(start, len(batch.y)))
        if len(picked.y):
            self.pending.append(picked)
            self.count += len(picked.y)
        if self.count >= len(batch.y):
            yield self._take()

    def rest(self) -> Iterator[Batch]:
        if self.count:
            yield self._take()

    def _rows_of(self, start: int, size: int) -> Tensor:
        """The null's rows within the batch of ``size`` samples starting at sample ``start``."""
        assert self.positions is not None
        first, stop = torch.searchsorted(self.positions, torch.tensor([start, start + size])).tolist()
        return self.positions[first:stop] - start

    def _take(self) -> Batch:
        parts, self.pending, self.count = self.pending, [], 0
        if len(parts) == 1:
            return parts[0]
        return Batch(
            x=torch.cat([p.x for p in parts]),
            y=torch.cat([p.y for p in parts]),
            error=torch.cat([p.error for p in parts]),
            grads=[torch.cat(gs) for gs in zip(*(p.grads for p in parts), strict=True)],
            scale=None if parts[0].scale is None else torch.cat([p.scale for p in parts if p.scale is not None]),
            projected=None if parts[0].projected is None else torch.cat([p.projected for p in parts]),  # type: ignore[misc]
        )


def _take_rows(batch: Batch, rows: Tensor) -> Batch:
    return batch.rows(rows.to(batch.y.device))
