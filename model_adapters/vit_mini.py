"""A small vision transformer (the protocol paper's ViT-Mini): patch embedding with
learned positions, pre-LN blocks (attention + MLP), a terminal LayerNorm and a head on
the mean token. Attention is written with plain Linear layers so that FA replaces every
weight. Hidden states by hooks: the whole residual stream [tokens, dim] per sample
after the embedding and after each block, since DFA and FA credit every token, not
only a pooled one."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .base import AdaptedModel, AdapterConfigError, seeded_init, take_config
from .registry import register_adapter


def _small_normal(shape: tuple[int, ...]) -> torch.Tensor:
    """N(0, 0.02²) positions. fa-audit first builds a model on the meta device to check its
    keys and shapes before allocating it, and there an elementwise op imports
    torch._dynamo (2 s): the meta build gets zeros, which draw nothing from the RNG."""
    if torch.get_default_device().type == "meta":
        return torch.zeros(shape)
    return torch.randn(shape) * 0.02


class PatchEmbed(nn.Module):
    def __init__(self, in_channels: int, image_size: int, patch_size: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.pos = nn.Parameter(_small_normal((1, (image_size // patch_size) ** 2, dim)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens: torch.Tensor = self.proj(x).flatten(2).transpose(1, 2)
        return tokens + self.pos


class Attention(nn.Module):
    causal = False
    """Each token attends to itself and the tokens before it only (a language model's)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(x).view(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-2, -1) / math.sqrt(d // self.heads)
        if self.causal:
            scores = scores.masked_fill(torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1), float("-inf"))
        weights = scores.softmax(-1)
        out: torch.Tensor = self.proj((weights @ v).transpose(1, 2).reshape(n, t, d))
        return out


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.ln2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, mlp_ratio * dim)
        self.fc2 = nn.Linear(mlp_ratio * dim, dim)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        """f_l(h): what the block adds to the residual stream (DFA trains it locally)."""
        h = self.attn(self.ln1(x))
        out: torch.Tensor = h + self.fc2(nn.functional.gelu(self.fc1(self.ln2(x + h))))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch(x)


class ViTMini(nn.Module):
    def __init__(
        self, in_channels: int, image_size: int, patch_size: int, dim: int, depth: int, heads: int,
        mlp_ratio: int, num_classes: int,
    ) -> None:  # fmt: skip
        super().__init__()
        self.embed = PatchEmbed(in_channels, image_size, patch_size, dim)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        for block in self.blocks:
            h = block(h)
        out: torch.Tensor = self.head(self.norm(h).mean(1))
        return out


@register_adapter
class ViTMiniAdapter:
    name = "vit_mini"
    description = (
        "pre-LN vision transformer, terminal LayerNorm, mean-token head: in_channels, image_size, patch_size, "
        "dim, depth, heads, num_classes, mlp_ratio=2"
    )

    def build(self, config: Mapping[str, Any], *, seed: int | None = None) -> AdaptedModel:
        required = {"in_channels": int, "image_size": int, "patch_size": int, "dim": int, "depth": int,
                    "heads": int, "num_classes": int}  # fmt: skip
        cfg = take_config(config, required=required, optional={"mlp_ratio": 2})
        if cfg["image_size"] % cfg["patch_size"] or cfg["dim"] % cfg["heads"]:
            raise AdapterConfigError("image_size must be a multiple of patch_size, and dim of heads")
        with seeded_init(seed):
            model = ViTMini(**cfg)
        names = ("embed", *(f"blocks.{i}" for i in range(cfg["depth"])))
        return AdaptedModel(model, hidden_modules=names, deep_prefixes=("blocks.",), hooked=True)
