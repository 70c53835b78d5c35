"""A small causal language model (GPT-style): token and learned position embeddings, pre-LN
blocks (causal attention + MLP), a terminal LayerNorm and a head giving every position's
next-token logits, [N, T, vocab]. This is the architecture the protocol's Mode 1 is about: a
residual stream behind a terminal LayerNorm. Hidden states by hooks: the whole residual
stream [T, dim] per sequence after the embedding and after each block. The input is token
ids [N, T] (int64)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .base import AdaptedModel, AdapterConfigError, InputShapeError, seeded_init, take_config
from .registry import register_adapter
from .vit_mini import Attention, Block, _small_normal


def _unit_normal(shape: tuple[int, ...]) -> torch.Tensor:
    """nn.Embedding's own N(0, 1) init, drawn the same way (``torch.randn`` draws what its
    ``normal_`` draws); on the meta device, zeros: there nn.Embedding's init imports
    torch._dynamo on first use (1 s of every audit of a gpt_mini)."""
    if torch.get_default_device().type == "meta":
        return torch.zeros(shape)
    return torch.randn(shape)


class TokenEmbed(nn.Module):
    def __init__(self, vocab: int, context: int, dim: int) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab, dim, _weight=_unit_normal((vocab, dim)))
        self.pos = nn.Parameter(_small_normal((1, context, dim)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] > self.pos.shape[1]:
            raise InputShapeError(f"gpt_mini takes token ids [N, T] with T <= {self.pos.shape[1]}, not {list(x.shape)}")
        embedded: torch.Tensor = self.tokens(x.long()) + self.pos[:, : x.shape[1]]
        return embedded


class CausalAttention(Attention):
    causal = True


class GPTMini(nn.Module):
    def __init__(self, vocab: int, context: int, dim: int, depth: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.embed = TokenEmbed(vocab, context, dim)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(depth))
        for block in self.blocks:
            block.attn = CausalAttention(dim, heads)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        for block in self.blocks:
            h = block(h)
        out: torch.Tensor = self.head(self.norm(h))
        return out


@register_adapter
class GPTMiniAdapter:
    name = "gpt_mini"
    description = (
        "causal pre-LN transformer language model, terminal LayerNorm, per-token logits [N, T, vocab]: vocab, "
        "context, dim, depth, heads, mlp_ratio=2 (loss head token_cross_entropy)"
    )

    def build(self, config: Mapping[str, Any], *, seed: int | None = None) -> AdaptedModel:
        required = {"vocab": int, "context": int, "dim": int, "depth": int, "heads": int}
        cfg = take_config(config, required=required, optional={"mlp_ratio": 2})
        if cfg["dim"] % cfg["heads"]:
            raise AdapterConfigError("dim must be a multiple of heads")
        with seeded_init(seed):
            model = GPTMini(**cfg)
        names = ("embed", *(f"blocks.{i}" for i in range(cfg["depth"])))
        return AdaptedModel(model, hidden_modules=names, deep_prefixes=("blocks.",), hooked=True)
