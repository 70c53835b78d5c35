"""``--loss module:pkg.mod:fn``: a user's loss, ``fn(output, target)`` returning one loss per
sample. It is called on the model's output in float64 and differentiated by autograd there;
what it returns is checked (shape [N], finite, dependent on the output). Only a command line
or an API call names one: a checkpoint's ``meta.loss`` may name registered heads only, so no
file can make the audit import code."""

from __future__ import annotations

from collections.abc import Callable

import torch

from model_adapters.base import AdapterConfigError
from model_adapters.module_path import load_function, users_code

from ..errors import InputError
from ..escape import printable
from .base import LossHead, Tensor, max_scaled


class UserLoss(LossHead):
    targets = "any"
    metric = "loss"

    def __init__(self, spec: str, function: Callable[[Tensor, Tensor], Tensor]) -> None:
        self.name = spec
        self.description = f"the user's loss {printable(spec)}; metric: the loss"
        self._function = function

    @classmethod
    def load(cls, spec: str) -> UserLoss:
        try:
            return cls(spec, load_function(spec))
        except AdapterConfigError as exc:
            raise InputError(f"--loss {printable(spec)}: {exc}") from None

    def per_sample_loss(self, output64: Tensor, y: Tensor) -> Tensor:
        with torch.no_grad():
            return self._called(output64, y).detach()

    def output_error(self, output64: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        with torch.enable_grad():
            output = output64.detach().requires_grad_()
            loss = self._called(output, y)
            if not loss.requires_grad:
                raise InputError(f"--loss {printable(self.name)} returns a loss that does not depend on the output")
            (error,) = torch.autograd.grad(loss.sum(), output, allow_unused=True)
        if error is None:
            raise InputError(f"--loss {printable(self.name)} returns a loss that does not depend on the output")
        return max_scaled(error.detach())

    def _called(self, output: Tensor, y: Tensor) -> Tensor:
        try:
            with users_code(f"calling {self.name.removeprefix('module:')}"):
                loss = self._function(output, y)
        except AdapterConfigError as exc:
            raise InputError(f"--loss {printable(self.name)}: {exc}") from None
        n = output.shape[0]
        if not isinstance(loss, Tensor) or tuple(loss.shape) != (n,):
            got = f"shape {list(loss.shape)}" if isinstance(loss, Tensor) else type(loss).__name__
            raise InputError(f"--loss {printable(self.name)} returns {got}; it must return one loss per sample, [{n}]")
        if not torch.isfinite(loss).all():
            raise InputError(f"--loss {printable(self.name)} returns a loss that is NaN or Inf")
        return loss.double()

    def check_output(self, output: Tensor) -> str | None:
        return None

    def prepare(self, y: Tensor, outputs: int, where: str) -> Tensor:
        if y.is_floating_point():
            if not torch.isfinite(y).all():
                raise InputError("y contains NaN or Inf", where)
            return y.double()
        return y.long()
