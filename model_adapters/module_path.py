"""``module:pkg.mod:Class`` — any nn.Module with the protocol paper's duck-typed
interface ``model(x, return_hidden=True) -> (logits, [h_0..h_L])`` and ``model.blocks``."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from torch import nn

from .base import AdaptedModel, AdapterConfigError, seeded_init


class ModulePathAdapter:
    description = "your own nn.Module by import path; arch_config is passed as keyword arguments"

    def __init__(self, path: str) -> None:
        self.name = f"module:{path}"
        self.path = path

    def _load_class(self) -> type[nn.Module]:
        mod_name, _, cls_name = self.path.partition(":")
        if not mod_name or not cls_name:
            raise AdapterConfigError(f"{self.name!r} is not of the form module:pkg.mod:Class")
        try:
            cls = getattr(importlib.import_module(mod_name), cls_name)
        except (ImportError, AttributeError) as exc:
            raise AdapterConfigError(f"cannot import {self.path}: {exc}") from None
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise AdapterConfigError(f"{self.path} is not an nn.Module subclass")
        return cls

    def build(self, config: Mapping[str, Any], *, seed: int | None = None) -> AdaptedModel:
        cls = self._load_class()
        try:
            with seeded_init(seed):
                model = cls(**config)
        except TypeError as exc:
            raise AdapterConfigError(f"{self.path} does not accept this arch_config: {exc}") from None
        blocks = getattr(model, "blocks", None)
        if not isinstance(blocks, nn.ModuleList | nn.Sequential):
            raise AdapterConfigError(f"{self.path} has no model.blocks (nn.ModuleList) as the interface requires")
        first = "embed" if hasattr(model, "embed") else "patch_embed"
        names = (first, *(f"blocks.{i}" for i in range(len(blocks))))
        return AdaptedModel(model, hidden_modules=names, deep_prefixes=("blocks.",))
