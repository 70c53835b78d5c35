"""Plain tanh MLP without LayerNorm (the protocol paper's "StudentNet")."""

from __future__ import annotations

from collections.abc import Mapping
from itertools import pairwise
from typing import Any

import torch
from torch import nn

from .base import AdaptedModel, seeded_init, take_config
from .registry import register_adapter


class MLP(nn.Module):
    def __init__(self, in_dim: int, width: int, depth: int, num_classes: int) -> None:
        super().__init__()
        dims = [in_dim] + [width] * depth
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(dims))
        self.head = nn.Linear(width, num_classes)

    def forward(
        self, x: torch.Tensor, return_hidden: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        hidden: list[torch.Tensor] = []
        h = x
        for layer in self.layers:
            h = torch.tanh(layer(h))
            hidden.append(h)
        logits = self.head(h)
        return (logits, hidden) if return_hidden else logits


@register_adapter
class MLPAdapter:
    name = "mlp"
    description = "tanh MLP without LayerNorm: in_dim, width, depth, num_classes"

    def build(self, config: Mapping[str, Any], *, seed: int | None = None) -> AdaptedModel:
        cfg = take_config(config, required={"in_dim": int, "width": int, "depth": int, "num_classes": int}, optional={})
        with seeded_init(seed):
            model = MLP(**cfg)
        names = tuple(f"layers.{i}" for i in range(cfg["depth"]))
        # layers.0 maps the input into the network: it is interface, not a deep block.
        deep = tuple(f"layers.{i}." for i in range(1, cfg["depth"]))
        return AdaptedModel(model, hidden_modules=names, deep_prefixes=deep)
