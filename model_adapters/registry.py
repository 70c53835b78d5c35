"""The adapter registry: built-ins register with a decorator, third parties through
the ``fa_audit.adapters`` entry-point group."""

from __future__ import annotations

import importlib
import sys
from importlib.metadata import EntryPoint, entry_points
from typing import TypeVar

from .base import Adapter

ENTRY_POINT_GROUP = "fa_audit.adapters"
MODULE_PREFIX = "module:"

_ADAPTERS: dict[str, Adapter] = {}
_SOURCES: dict[str, str] = {}
"""Adapter name -> the distribution that provides it (built-ins: fa-audit)."""
_discovered = False

A = TypeVar("A")


def register_adapter(cls: type[A]) -> type[A]:
    """Class decorator: register one instance of ``cls`` under ``cls.name``."""
    adapter = cls()
    name = adapter.name  # type: ignore[attr-defined]
    if name in _ADAPTERS or name.startswith(MODULE_PREFIX):
        raise ValueError(f"an adapter named {name!r} is already registered")
    _ADAPTERS[name] = adapter  # type: ignore[assignment]
    return cls


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    importlib.import_module("model_adapters.resmlp")
    importlib.import_module("model_adapters.mlp")
    importlib.import_module("model_adapters.small_cnn")
    importlib.import_module("model_adapters.vit_mini")
    importlib.import_module("model_adapters.gpt_mini")
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = ep.load()
            if isinstance(loaded, type) and loaded.__name__ not in {type(a).__name__ for a in _ADAPTERS.values()}:
                register_adapter(loaded)
                _SOURCES[loaded().name] = ep.dist.name if ep.dist is not None else "an unknown distribution"
        except Exception as exc:  # a broken plugin must not take the tool down
            report_broken_plugin("adapter", ep, exc)


def report_broken_plugin(kind: str, ep: EntryPoint, exc: BaseException) -> None:
    """One plain line on stderr naming the distribution; the text is repr'd, so nothing
    a plugin raises can write control sequences to the terminal."""
    dist = ep.dist.name if ep.dist is not None else "an unknown distribution"
    sys.stderr.write(
        f"fa-audit: warning: {kind} plugin {ep.name!r} from {dist!r} failed to load and is skipped "
        f"({type(exc).__name__}: {str(exc)[:200]!r})\n"
    )


def get_adapter(name: str) -> Adapter:
    """The adapter for ``name``; ``module:pkg.mod:Class`` wraps a user's own class."""
    if name.startswith(MODULE_PREFIX):
        from .module_path import ModulePathAdapter

        return ModulePathAdapter(name[len(MODULE_PREFIX) :])
    _discover()
    try:
        return _ADAPTERS[name]
    except KeyError:
        known = ", ".join(sorted(_ADAPTERS))
        raise KeyError(f"unknown architecture {name!r} (registered: {known}, or module:pkg.mod:Class)") from None


def list_adapters() -> dict[str, Adapter]:
    _discover()
    return dict(sorted(_ADAPTERS.items()))


def source_of(name: str) -> str:
    """The distribution that provides adapter ``name``."""
    return _SOURCES.get(name, "fa-audit")
