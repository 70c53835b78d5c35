"""A gated residual MLP for fa-audit: the smallest complete adapter."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from model_adapters import AdaptedModel
from model_adapters.base import seeded_init, take_config


class GatedBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(width)
        self.value = nn.Linear(width, width)
        self.gate = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln(x)
        return x + torch.sigmoid(self.gate(h)) * torch.tanh(self.value(h))


class GatedMLP(nn.Module):
    def __init__(self, in_dim: int, width: int, depth: int, num_classes: int) -> None:
        super().__init__()
        self.embed = nn.Linear(in_dim, width)
        self.blocks = nn.ModuleList(GatedBlock(width) for _ in range(depth))
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        for block in self.blocks:
            h = block(h)
        out: torch.Tensor = self.head(h)
        return out


class GatedMLPAdapter:
    """What fa-audit asks of an adapter: a name, a one-line description, and ``build``."""

    name = "gated_mlp"
    description = "gated residual MLP (example plugin): in_dim, width, depth, num_classes"

    def build(self, config: Mapping[str, Any], *, seed: int | None = None) -> AdaptedModel:
        required = {"in_dim": int, "width": int, "depth": int, "num_classes": int}
        cfg = take_config(config, required=required, optional={})
        with seeded_init(seed):  # the seeded init a frozen-blocks baseline is compared with
            model = GatedMLP(**cfg)
        hidden = ("embed", *(f"blocks.{i}" for i in range(cfg["depth"])))
        # h_0..h_L are the outputs of these modules, captured by forward hooks (hooked=True);
        # a frozen baseline keeps every parameter under "blocks." at its initialisation.
        return AdaptedModel(model, hidden_modules=hidden, deep_prefixes=("blocks.",), hooked=True)
