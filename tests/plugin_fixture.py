"""A third-party adapter, as an entry point would provide it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from model_adapters import AdaptedModel, get_adapter


class TinyAdapter:
    name = "tiny-plugin"
    description = "a resmlp of depth 1, registered through an entry point"

    def build(self, config: Mapping[str, Any], *, seed: int | None = None) -> AdaptedModel:
        return get_adapter("resmlp").build({**config, "depth": 1}, seed=seed)
