"""The pieces of researchers' code that several tests write out as a user's own module
(text, because the command line imports it from a file), and the fixture that imports it."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from .conftest import user_module

FA_LINEAR_FUNCTION = '''
class FALinearFunction(torch.autograd.Function):
    """The common FA layer's Function: the error goes back through B, not W."""

    @staticmethod
    def forward(ctx, x, weight, weight_fa, bias):
        ctx.save_for_backward(x, weight_fa)
        return x @ weight.T + bias

    @staticmethod
    def backward(ctx, grad):
        x, weight_fa = ctx.saved_tensors
        return grad @ weight_fa, grad.T @ x, None, grad.sum(0)
'''

_HIDDEN_FORWARD = """
    def forward(self, x, return_hidden=False):
        hidden = [self.embed(x)]
        for block in self.blocks:
            hidden.append(block(hidden[-1]))
        logits = self.head(hidden[-1]{flatten})
        return (logits, hidden) if return_hidden else logits
"""


def hidden_forward(flatten: bool = False) -> str:
    """The duck-typed ``forward(x, return_hidden)`` over ``embed``, ``blocks`` and ``head``."""
    return _HIDDEN_FORWARD.format(flatten=".flatten(1)" if flatten else "")


def module_fixture(name: str, source: str) -> Any:
    """A module-scoped fixture: (its folder, the module) for ``source`` saved as ``name.py``."""

    @pytest.fixture(scope="module")
    def fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, ModuleType]]:
        folder = tmp_path_factory.mktemp(name)
        module = user_module(folder, name, source)
        yield folder, module
        sys.modules.pop(name, None)

    return fixture
