"""More null draws for the layers whose decision against ``null_z`` is not settled
(:mod:`fa_audit.measure.null_band`): the null's samples are kept from the pass, within a memory
bound, and measured again with fresh draws, doubling the count, until every layer's
interval lies on one side of ``null_z`` or the bound on draws is reached."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..methods import Batch
from .accumulate import LayerAccumulator
from .null_band import Reach, drawn_interval, reach

Tensor = torch.Tensor

KEEP_BYTES = 256 << 20
"""The null's samples (inputs, errors and gradients) are kept for more draws up to this
size; beyond it, an unsettled layer stays borderline at the pass's draws."""


class KeptNull:
    """The null's chunks, kept as the pass hands them out while they fit in KEEP_BYTES."""

    def __init__(self) -> None:
        self.chunks: list[Batch] | None = []
        self.bytes = 0

    def keep(self, chunk: Batch) -> None:
        if self.chunks is None:
            return
        self.bytes += sum(t.numel() * t.element_size() for t in (chunk.x, chunk.error, *chunk.grads))
        if self.bytes > KEEP_BYTES:
            self.chunks = None
        else:
            self.chunks.append(chunk)


def _unsettled(acc: LayerAccumulator, null_z: float) -> int | None:
    """The layer's draw count when its interval straddles ``null_z``; None when settled."""
    summary = acc.cosine_summary()
    if summary.z is None or summary.null_draws is None:
        return None
    interval = drawn_interval(summary.z, summary.null_draws, summary.null_std, summary.null_std_sample)
    return summary.null_draws if reach(summary.z, interval, null_z) is Reach.BORDERLINE else None


def settle(
    layers: list[LayerAccumulator],
    null_z: float,
    limit: int,
    block: int,
    measure_draws: Callable[[int, frozenset[int]], list[Tensor | None]],
) -> None:
    """Double the draws of the unsettled layers (settled ones keep theirs) up to ``limit``
    in all, ``block`` draws at a time, so that memory stays that of the pass's null;
    ``measure_draws(k, layers)`` gives k new null means of those layers (None elsewhere and
    where refused)."""
    while True:
        counts = {i: k for i, acc in enumerate(layers) if (k := _unsettled(acc, null_z)) is not None}
        if not counts:
            return
        have = min(counts.values())
        extra = min(have, limit - have)
        if extra <= 0:
            return
        for start in range(0, extra, block):
            means = measure_draws(min(block, extra - start), frozenset(counts))
            for i in counts:
                if (new := means[i]) is not None:
                    layers[i].more_null.append(new)
