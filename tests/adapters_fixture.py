"""A user's own model for the module:pkg.mod:Class adapter (duck-typed interface)."""

from __future__ import annotations

import torch
from torch import nn


class TinyResidual(nn.Module):
    def __init__(self, in_dim: int = 4, width: int = 8, depth: int = 2, classes: int = 3) -> None:
        super().__init__()
        self.embed = nn.Linear(in_dim, width)
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width)) for _ in range(depth))
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor, return_hidden: bool = False) -> object:
        hidden = [self.embed(x)]
        for block in self.blocks:
            hidden.append(hidden[-1] + block(hidden[-1]))
        logits = self.head(hidden[-1])
        return (logits, hidden) if return_hidden else logits
