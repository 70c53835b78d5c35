"""Small conv net (the protocol paper's SmallCNN): conv + BatchNorm + ReLU stages, no
terminal LayerNorm, a linear head on the flattened last stage. Hidden states by hooks."""

from __future__ import annotations

from collections.abc import Mapping
from itertools import pairwise
from typing import Any

import torch
from torch import nn

from .base import AdaptedModel, seeded_init, take_config
from .registry import register_adapter


class SmallCNN(nn.Module):
    def __init__(self, in_channels: int, image_size: int, width: int, depth: int, num_classes: int) -> None:
        super().__init__()
        channels = [in_channels] + [width] * depth
        self.stages = nn.ModuleList(
            nn.Sequential(nn.Conv2d(a, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU()) for a, b in pairwise(channels)
        )
        self.head = nn.Linear(width * image_size * image_size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        out: torch.Tensor = self.head(x.flatten(1))
        return out


@register_adapter
class SmallCNNAdapter:
    name = "small_cnn"
    description = "conv+BatchNorm+ReLU stages, linear head: in_channels, image_size, width, depth, num_classes"

    def build(self, config: Mapping[str, Any], *, seed: int | None = None) -> AdaptedModel:
        required = {"in_channels": int, "image_size": int, "width": int, "depth": int, "num_classes": int}
        cfg = take_config(config, required=required, optional={})
        with seeded_init(seed):
            model = SmallCNN(**cfg)
        names = tuple(f"stages.{i}" for i in range(cfg["depth"]))
        # stages.0 maps the image into the network: it is interface, not a deep block.
        return AdaptedModel(model, hidden_modules=names, deep_prefixes=tuple(f"{n}." for n in names[1:]), hooked=True)
