"""The processes one audit spans: under ``torchrun`` (or inside a process group a training
loop has initialised) each rank measures its own shard of the eval data and the ranks'
running sums are gathered and merged, in rank order, into one set on every rank; a lone
process is the world of one and gathers nothing."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, TypeVar

from ..errors import InputError

T = TypeVar("T")


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls, enabled: bool = True) -> Ranks:
        """The initialised default process group's, when ``enabled``; else this process alone."""
        if not enabled:
            return cls()
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return cls()
        return cls(dist.get_rank(), dist.get_world_size())

    def gather(self, value: T) -> list[T]:
        """Every rank's ``value`` (picklable, on the CPU), in rank order, on every rank."""
        if self.world == 1:
            return [value]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, value)
        return out

    def shard(self, total: int, unit: int) -> tuple[int, int]:
        """This rank's contiguous [start, stop) of ``total`` samples, cut at multiples of
        ``unit`` so that every batch and every dir_stab minibatch lies on one rank as it
        would in one process (a rank may get none when there are fewer units than ranks)."""
        units = math.ceil(total / unit)
        first, last = self.rank * units // self.world, (self.rank + 1) * units // self.world
        return min(first * unit, total), min(last * unit, total)

    def offset(self, samples: int) -> tuple[int, int]:
        """For data each rank holds already (a DistributedSampler's shard): the first
        sample's number in the whole and the whole's size."""
        counts = self.gather(samples)
        return sum(counts[: self.rank]), sum(counts)


ALONE = Ranks()
"""A process that gathers from no other."""


def raise_first(errors: list[BaseException | None]) -> None:
    """The lowest rank's error, raised on every rank, so that all end alike; a refusal that
    is not rank 0's says whose it is (rank 0 alone prints it)."""
    for rank, error in enumerate(errors):
        if error is None:
            continue
        if rank and isinstance(error, InputError):
            raise InputError(f"on rank {rank}: {error}") from error
        raise error
