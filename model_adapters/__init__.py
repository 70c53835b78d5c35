"""Model adapters: turn (arch, arch_config, state_dict) into a model whose hidden
states, deep blocks and feedback layers fa-audit can name.

Register your own with ``@register_adapter`` or the ``fa_audit.adapters`` entry point.
"""

from .base import AdaptedModel, Adapter, AdapterConfigError
from .registry import ENTRY_POINT_GROUP, get_adapter, list_adapters, register_adapter

__all__ = [
    "ENTRY_POINT_GROUP",
    "AdaptedModel",
    "Adapter",
    "AdapterConfigError",
    "get_adapter",
    "list_adapters",
    "register_adapter",
]
