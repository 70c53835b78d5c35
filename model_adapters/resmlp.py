"""Pre-LayerNorm residual MLP: the architecture where Mode 1 appears."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .base import AdaptedModel, seeded_init, take_config
from .registry import register_adapter


class ResBlock(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def branch(self, h: torch.Tensor) -> torch.Tensor:
        """f_l(h): the residual branch that DFA trains by its local loss."""
        out: torch.Tensor = self.fc2(nn.functional.gelu(self.fc1(self.ln(h))))
        return out

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.branch(h)


class ResMLP(nn.Module):
    def __init__(
        self, in_dim: int, width: int, depth: int, num_classes: int, mlp_ratio: int, terminal_ln: bool
    ) -> None:
        super().__init__()
        self.embed = nn.Linear(in_dim, width)
        self.blocks = nn.ModuleList(ResBlock(width, mlp_ratio * width) for _ in range(depth))
        self.norm = nn.LayerNorm(width) if terminal_ln else nn.Identity()
        self.head = nn.Linear(width, num_classes)

    def forward(
        self, x: torch.Tensor, return_hidden: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        hidden = [self.embed(x)]
        for block in self.blocks:
            hidden.append(block(hidden[-1]))
        logits = self.head(self.norm(hidden[-1]))
        return (logits, hidden) if return_hidden else logits


@register_adapter
class ResMLPAdapter:
    name = "resmlp"
    description = "pre-LN residual MLP: in_dim, width, depth, num_classes, mlp_ratio=4, terminal_ln=true"

    def build(self, config: Mapping[str, Any], *, seed: int | None = None) -> AdaptedModel:
        cfg = take_config(
            config,
            required={"in_dim": int, "width": int, "depth": int, "num_classes": int},
            optional={"mlp_ratio": 4, "terminal_ln": True},
        )
        with seeded_init(seed):
            model = ResMLP(**cfg)
        names = ("embed", *(f"blocks.{i}" for i in range(cfg["depth"])))
        return AdaptedModel(model, hidden_modules=names, deep_prefixes=("blocks.",))
