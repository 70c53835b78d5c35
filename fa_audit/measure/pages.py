"""Mapped pages of their own, reused, for the large float64 tensors the audit makes again and
again: a float64 model's casts (:mod:`.float64_model`), and each batch's float64 logits, the
loss head's work copy of them and the float64 gradients.

A fresh tensor of 32 MiB or more is a fresh mapping with glibc's malloc, and each of its pages
faults in when first written: a language model's batch of float64 logits ([16,384, 256], 32 MiB)
took 9 ms to make and 1.1 ms to copy into pages already mapped. Each mapping here is reused once
every tensor on it is gone (a weak reference to its storage says so), so a tensor still held
anywhere is never written over."""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch
from torch.multiprocessing.reductions import StorageWeakRef

Tensor = torch.Tensor

PASS_LEAST = 32 << 20
"""The pass's least: glibc maps afresh every allocation from 32 MiB (its mmap threshold's ceiling);
smaller ones come from the heap once the threshold has risen, and pages kept for them would
only hold memory the heap could give to other sizes."""


class Pages:
    """Mappings per size, each with a weak reference to the storage last made on it, for tensors of
    ``least`` bytes and up (smaller ones come from the heap)."""

    def __init__(self, least: int) -> None:
        self.least = least
        self.held: dict[int, list[tuple[mmap.mmap, Any]]] = {}

    def float64_of(self, source: Tensor) -> Tensor:
        """``source`` in float64, detached and contiguous (so that a cast made again has the first
        one's geometry), always a copy."""
        size = source.numel() * 8
        if source.device.type != "cpu" or size < max(self.least, 1):
            return source.detach().to(torch.float64, memory_format=torch.contiguous_format, copy=True)
        held = self.held.setdefault(size, [])
        free = next((i for i, (_, on) in enumerate(held) if on is None or on.expired()), None)
        if free is None:
            held.append((mmap.mmap(-1, size), None))
            free = len(held) - 1
        # resize_ to the same size, not view: a view's _base would hide a cast from float64_model's _pack
        made = torch.frombuffer(held[free][0], dtype=torch.float64).resize_(source.shape)
        held[free] = (held[free][0], StorageWeakRef(made.untyped_storage()))  # type: ignore[no-untyped-call]
        return made.copy_(source.detach())


_PASS: ContextVar[Pages | None] = ContextVar("fa_audit_pass_pages", default=None)


@contextmanager
def reusing(pages: Pages) -> Iterator[None]:
    """:func:`float64` takes ``pages`` while the block runs (the audit's pass)."""
    token = _PASS.set(pages)
    try:
        yield
    finally:
        _PASS.reset(token)


def float64(source: Tensor, copy: bool = False) -> Tensor:
    """``source`` detached in float64, as ``.double()`` gives it (the same tensor where it is
    float64 already, unless ``copy``), on the pass's pages where one is running."""
    source = source.detach()
    if source.dtype == torch.float64 and not copy:
        return source
    pages = _PASS.get()
    if pages is None:
        return source.to(torch.float64, copy=copy)
    return pages.float64_of(source)
