"""``module:pkg.mod:name`` — an nn.Module class, or a function that returns an nn.Module
(torchvision's ``resnet18``, a model zoo's factory), called with arch_config as keyword
arguments. With the protocol paper's duck-typed interface ``model(x, return_hidden=True)
-> (logits, [h_0..h_L])`` and ``model.blocks`` it needs nothing more; otherwise --hidden
names its hidden modules."""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, redirect_stdout
from typing import Any

from torch import nn

from .base import AdaptedModel, AdapterConfigError, seeded_init


class ModulePathAdapter:
    description = "your own nn.Module class or factory by import path; arch_config is passed as keyword arguments"

    def __init__(self, path: str) -> None:
        self.name = f"module:{path}"
        self.path = path

    def _load_maker(self) -> Any:
        mod_name, _, name = self.path.partition(":")
        if not mod_name or not name:
            raise AdapterConfigError(f"{self.name!r} is not of the form module:pkg.mod:Class")
        with users_code(f"importing {mod_name}"), importable_cwd():
            module = importlib.import_module(mod_name)
        maker = getattr(module, name, None)
        if isinstance(maker, type) and issubclass(maker, nn.Module):
            return maker
        if maker is None or isinstance(maker, type) or not callable(maker):
            raise AdapterConfigError(f"{self.path} is neither an nn.Module subclass nor a function returning one")
        return maker

    def accepted(self, arguments: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """``arguments`` split into those the class or factory takes and those it does not (all
        taken where it has ``**kwargs``): a Lightning checkpoint's hyper_parameters hold the
        training's arguments (lr, batch_size) beside the model's."""
        try:
            parameters = inspect.signature(self._load_maker()).parameters.values()
        except (TypeError, ValueError):  # no signature to read: pass everything, as before
            return dict(arguments), []
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
            return dict(arguments), []
        names = {p.name for p in parameters if p.kind is not inspect.Parameter.VAR_POSITIONAL}
        return {k: v for k, v in arguments.items() if k in names}, [k for k in arguments if k not in names]

    def build(self, config: Mapping[str, Any], *, seed: int | None = None) -> AdaptedModel:
        maker = self._load_maker()
        with users_code(f"building {self.path} from this arch_config"), seeded_init(seed):
            model = maker(**config)
        if not isinstance(model, nn.Module):
            raise AdapterConfigError(f"{self.path} returned a {type(model).__name__}, not an nn.Module")
        return adapted(model, self.path)


def adapted(model: nn.Module, name: str) -> AdaptedModel:
    """A user's model: duck-typed when it has ``model.blocks``, else hooked hidden modules
    that --hidden (``hidden=``) names."""
    if getattr(model, "blocks", None) is None:
        return AdaptedModel(model, hidden_modules=(), deep_prefixes=(), hooked=True)
    return duck_typed(model, name)


def duck_typed(model: nn.Module, name: str) -> AdaptedModel:
    """A model with the protocol paper's interface: ``forward(x, return_hidden=True)``,
    ``model.blocks`` and ``model.embed`` (or ``patch_embed``)."""
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.ModuleList | nn.Sequential):
        raise AdapterConfigError(
            f"{name} has no model.blocks (nn.ModuleList) as the interface requires; name its hidden modules instead"
        )
    first = "embed" if hasattr(model, "embed") else "patch_embed"
    names = (first, *(f"blocks.{i}" for i in range(len(blocks))))
    return AdaptedModel(model, hidden_modules=names, deep_prefixes=("blocks.",))


@contextmanager
def importable_cwd() -> Iterator[None]:
    """The current directory is importable, as with ``python -m``."""
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


@contextmanager
def users_code(doing: str) -> Iterator[None]:
    """Run the user's own code: whatever it raises, or a sys.exit, becomes one config
    error, and what it prints goes to stderr, never into ``--json -`` on stdout."""
    try:
        with redirect_stdout(sys.stderr):
            yield
    except SystemExit as exc:
        raise AdapterConfigError(f"{doing} called sys.exit({exc.code!r})") from None
    except Exception as exc:
        raise AdapterConfigError(f"{doing} failed: {type(exc).__name__}: {str(exc)[:200]}") from None


def load_function(spec: str) -> Any:
    """``module:pkg.mod:function`` from the user's code (the current directory importable)."""
    mod_name, _, fn_name = spec.removeprefix("module:").partition(":")
    if not mod_name or not fn_name:
        raise AdapterConfigError(f"{spec!r} is not of the form module:pkg.mod:function")
    with users_code(f"importing {mod_name}"), importable_cwd():
        module = importlib.import_module(mod_name)
    function = getattr(module, fn_name, None)
    if not callable(function):
        raise AdapterConfigError(f"{mod_name} has no function {fn_name}")
    return function
