"""Proof that the reference is backprop: the model's autograd gradient g_l at every hidden
state is checked against float64 central differences along a few random directions at h_l,
on a few rows drawn at random. An FA layer that replaces its backward (a custom
``autograd.Function``, a module or tensor backward hook, a graph cut by ``detach``) makes
autograd compute the method's credit, and a cosine of that credit with "the gradient" would
be the credit against itself (Γ = 1). Finite differences only run the forward, so they
cannot be fooled that way."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple, NoReturn

import torch
from torch import nn
from torch.autograd.function import BackwardCFunction

from model_adapters import AdaptedModel
from model_adapters.base import UserForwardError
from model_adapters.hooks import first_tensor

from ..errors import InputError
from ..escape import printable
from .diagnostics import nudged_objective, random_nudges, tied

Tensor = torch.Tensor

SAMPLES = 2
DIRECTIONS = 2
"""Two random directions on two samples suffice: a credit c ≠ g_l passes only if ⟨g_l − c, v⟩
nearly vanishes along every direction, a chance of order (TOLERANCE · ‖g_l‖ / ‖g_l − c‖)² for
Gaussian v; four of each doubled the check's cost (a widened pass per h_l) for no more power."""
STEPS = (1e-5, 1e-7, 1e-9)
"""A nudge's norm relative to each sample's ‖h_l‖: small enough that the central difference's
truncation error (∝ step²) is far below TOLERANCE, large enough that float64 rounding of the
loss is too, even for a collapsed reference. A piecewise-linear network (ReLU, max-pool)
crosses kinks: on a ResNet-18 of 65,536 units per state, 1e-5 missed by 1.7 % and 1e-7 by
3e-8, so a layer that misses is checked again along the same directions 100 times shorter,
and again: over 40 pairs of samples of a random-weight ResNet-18 (CIFAR stem), 1e-7 still
crossed a kink and missed by up to 0.28 % in 1 of 40 (a refusal of a plain ReLU network),
1e-9 in none, where rounding costs at most 3e-5 (1.2e-5 on the bundled samples). A crossed
kink's error shrinks with the step; a replaced backward's does not. The nudges leave a
feature map's exact zeros alone (:func:`provable`): a ReLU's dead units sit on its kink, and a
max-pool over a window of them is a tie, where the loss has one-sided derivatives only and
autograd picks one (no step is short enough: BioTorch's LeNet-CIFAR, ReLU then max-pool, missed
by 39 % at both steps)."""
TOLERANCE = 1e-3
"""Largest relative error ‖fd − ⟨g, v⟩‖ / ‖fd‖ over the directions. Autograd's float64 gradient
agrees with the differences to ≈ 1e-7 on every sample checkpoint (a collapsed DFA reference
at ‖h‖ = 2e9 included); a backward replaced by feedback misses by tens of percent, and one
that differs from the gradient by 0.1 % would move no printed cosine."""
SETTLED = TOLERANCE / 100
"""An error the next step is not tried for: one within the tolerance but above this is a
kink crossed by chance (rows drawn at random cross one now and then: 6.8e-4 at 1e-5 on
dfa.pt), whose error the next step shrinks, so that ``grad_check`` reads ≈ 1e-7, not 1e-4."""
FLOOR = 1e-12
"""Loss changes below this (relative to the loss) are float64 rounding: such a layer agrees."""


@dataclass(frozen=True)
class GradCheck:
    """One hidden state's check: the relative error, None where h_l cannot be nudged."""

    error: float | None

    @property
    def failed(self) -> bool:
        return self.error is not None and self.error > TOLERANCE


def worst(checks: list[GradCheck]) -> GradCheck:
    """The largest error of several checks of one state (None when none could be made)."""
    errors = [c.error for c in checks if c.error is not None]
    return GradCheck(max(errors) if errors else None)


class ReferenceProof(NamedTuple):
    layers: list[GradCheck]
    """Each h_l's check."""
    through_input: GradCheck
    """The same check at the model's input, made where some state cannot be nudged alone (None
    otherwise, and for integer inputs): a backward replaced anywhere between the input and the
    logits changes the gradient there, so it vouches for such a state, though not for its
    entries at a dead unit."""


class Recomputed(NamedTuple):
    """A float64 forward and backward of some rows, restricted to the rows to check."""

    logits: Tensor
    hidden: list[Tensor]
    grads: list[Tensor]
    """ĝ_l = ∂⟨z, ê⟩/∂h_l, ê held fixed (:func:`~fa_audit.measure.run.bp_pass`)."""
    error: Tensor
    """ê, the unit-row output error of ``logits``."""
    input_grad: Tensor | None
    """∂⟨z, ê⟩/∂x (None for integer inputs)."""


def check_reference(
    model64: AdaptedModel, x64: Tensor, passed: Recomputed, generator: torch.Generator, inject_at: list[Any]
) -> ReferenceProof:
    """Each h_l's check on the rows x64, whose gradients ``passed`` holds; ``inject_at`` is
    :func:`~fa_audit.measure.diagnostics.injectors` of ``model64``.

    The gradients checked are the ones the float64 agreement compares the audit's float32
    gradients with, from the same backward of the same batch of rows, drawn at random from the
    whole pass: a backward that is true only for small batches, some rows, the first batch or
    float64 fails one of the two. What is checked is the audit's own quantity, ĝ_l, against
    central differences of ⟨z, ê⟩ (only forwards): the loss head is fa-audit's, not the
    model's, and ⟨z, ê⟩ resolves a nudge however saturated the sample."""
    error = passed.error
    floor = FLOOR * max(float((passed.logits * error).abs().sum()), 1e-300)
    out = []
    for layer, (h, g) in enumerate(zip(passed.hidden, passed.grads, strict=True)):
        inject = inject_at[layer]
        fresh = partial(random_nudges, h, DIRECTIONS, 1.0, generator, provable(h))
        unit = fresh()
        if inject is None or not bool(unit.any()):  # nothing can be nudged, nothing is proved
            out.append(GradCheck(None))
            continue
        objective = partial(nudged_objective, model64, inject, x64=x64, error=error)
        out.append(_twice(objective, unit, g, floor, fresh))
    through = GradCheck(None)
    if passed.input_grad is not None and any(c.error is None for c in out):  # only a state no nudge reached needs it
        objective = partial(nudged_objective, model64, None, x64=x64, error=error)
        fresh = partial(random_nudges, x64, DIRECTIONS, 1.0, generator)
        through = _twice(objective, fresh(), passed.input_grad, floor, fresh)
    return ReferenceProof(out, through)


def provable(h: Tensor) -> Tensor:
    """Where h_l may be nudged: not at a value tied with another of the same sample (a max-pool
    window of equal activations: a constant image background gives many), nor, in a feature
    map, at an exact zero (a dead ReLU unit feeding a max-pool is a tie). A feature vector's
    zeros are nudged: nothing after a vector pools it, and a backward replaced only at a
    vector's dead units (cos 0.593 where the true gradient gives −0.046) is found there."""
    nonzero = h != 0
    keep = ~(tied(h) & nonzero)
    return keep if h.dim() <= 2 else keep & nonzero


def _twice(
    objective: Callable[[Tensor], Tensor], unit: Tensor, g: Tensor, floor: float, fresh: Callable[[], Tensor]
) -> GradCheck:
    """:func:`_laddered` along ``unit``, and where that fails, again along ``fresh()`` directions: the
    smaller error. Float64's rounding of the loss is the same size along any direction, but the error
    is relative to ⟨g, v⟩, and a direction nearly orthogonal to g (behind a stream of norm 7e9, where
    only the shortest step is linear) takes it past the tolerance now and then; a replaced backward
    misses along every direction, so it fails both, and passes with at most twice the chance of one."""
    check = _laddered(objective, unit, g, floor)
    if not check.failed:
        return check
    return min(check, _laddered(objective, fresh(), g, floor), key=lambda c: c.error or 0.0)


def _laddered(objective: Callable[[Tensor], Tensor], unit: Tensor, g: Tensor, floor: float) -> GradCheck:
    """The check along ``unit``'s directions at each of STEPS until one agrees to SETTLED."""
    errors: list[float] = []
    for step in STEPS:
        errors.append(_central_difference_error(objective, unit * step, g.detach(), floor))
        if errors[-1] <= SETTLED:
            break
    return GradCheck(min(errors))


def _central_difference_error(objective: Callable[[Tensor], Tensor], delta: Tensor, g: Tensor, floor: float) -> float:
    """‖fd − ⟨g, δ⟩‖ / ‖fd‖ over the nudges δ (one per direction)."""
    both = objective(torch.cat([delta, -delta])).sum(1)
    fd = (both[:DIRECTIONS] - both[DIRECTIONS:]) / 2
    ad = (g * delta).flatten(1).sum(1)
    return float((fd - ad).norm()) / max(float(fd.norm()), float(ad.norm()), floor)


def describe(error: float) -> str:
    """A relative error as a percentage a reader takes in at once."""
    return f"{100 * error:.3g} %" if error < 10 else f"{error:.3g}×"


def replaced_backward(model: AdaptedModel, x: Tensor) -> dict[str, str]:
    """The modules whose backward is not autograd's own, each with what replaces it: a custom
    ``autograd.Function`` made in its forward, a module backward hook, a tensor hook on its
    input or output, or a cut of the graph (an output that requires grad with no history)."""
    found: dict[str, list[str]] = {}
    claimed: set[Any] = set()
    blamed: set[int] = set()

    def hook(name: str) -> Any:
        def record(module: nn.Module, args: tuple[Any, ...], out: Any) -> None:
            inputs = [a for a in args if isinstance(a, Tensor)]
            output = first_tensor(out)
            how = []
            if module._backward_hooks or module._backward_pre_hooks:
                how.append("a module backward hook")
            hooked = [t for t in (*inputs, output) if t is not None and t._backward_hooks and id(t) not in blamed]
            if hooked:
                blamed.update(id(t) for t in hooked)
                how.append("a tensor hook")
            if output is not None and output.grad_fn is None and any(t.requires_grad for t in inputs):
                how.append("a graph cut (its output is detached from its input)")
            if output is not None and output.grad_fn is not None:
                stop = {t.grad_fn for t in inputs if t.grad_fn is not None}
                how += [f"autograd.Function {n}" for n in _custom_nodes(output.grad_fn, stop, claimed)]
            if how:
                found.setdefault(name, []).extend(how)

        return record

    handles = [m.register_forward_hook(hook(n or "the model")) for n, m in model.module.named_modules()]
    try:
        with torch.enable_grad():
            model.forward_hidden(x.detach().requires_grad_(x.is_floating_point()))  # a cut right after the input shows
    finally:
        for handle in handles:
            handle.remove()
    return {name: ", ".join(dict.fromkeys(how)) for name, how in found.items()}


def _custom_nodes(node: Any, stop: set[Any], claimed: set[Any]) -> list[str]:
    """Custom Function nodes between ``node`` and the ``stop`` nodes, not claimed before (the
    forward hooks of inner modules run first, so each node goes to the innermost module)."""
    names, todo, seen = [], [node], set()
    while todo:
        current = todo.pop()
        if current is None or current in stop or current in seen:
            continue
        seen.add(current)
        if isinstance(current, BackwardCFunction) and current not in claimed:
            claimed.add(current)
            forward_cls = getattr(current, "_forward_cls", None)
            names.append(printable(getattr(forward_cls, "__name__", type(current).__name__)))
        todo.extend(next_node for next_node, _ in current.next_functions)
    return names


def prove_reference(
    model64: AdaptedModel, x64: Tensor, passed: Recomputed, generator: torch.Generator, inject_at: list[Any]
) -> ReferenceProof:
    """The checks of every h_l on the rows x64 (:func:`check_reference`); an :class:`InputError`
    naming the modules to blame when one fails, or when one cannot be made while some module
    replaces its backward or the check at the input fails too."""
    names = model64.hidden_modules
    try:
        proof = check_reference(model64, x64, passed, generator, inject_at)
    except (RuntimeError, UserForwardError) as exc:
        cannot_run(model64, x64, exc)
    checks = proof.layers
    failed = [i for i, c in enumerate(checks) if c.failed]
    unchecked = [i for i, c in enumerate(checks) if c.error is None]
    if not failed and not unchecked:
        return proof
    culprits = replaced_backward(model64, x64)
    if failed:
        worst = max(checks[i].error or 0.0 for i in failed)
        at = ", ".join(f"h{i} ({printable(names[i])})" for i in failed)
        what = (
            f"the model's autograd gradient is not the derivative of the loss at {at}: it misses float64 finite "
            f"differences by up to {describe(worst)} (tolerance {describe(TOLERANCE)})"
        )
        if model64.batch_dim and not culprits:  # each sample's loss is nudged alone: mixed "samples" fail
            k = model64.batch_dim
            raise InputError(
                f"{what}, and no module replaces its backward: with --batch-dim {k} the likeliest cause is that "
                f"dimension {k} of x is not the samples' axis (the model mixes what fa-audit takes for samples), so "
                "no number derived from the BP gradient can be reported"
            )
        refuse(what, culprits)
    at = ", ".join(f"h{i}" for i in unchecked)
    if culprits:
        refuse(f"the gradient at {at} cannot be checked (no single module produces or reads it)", culprits)
    if proof.through_input.failed:  # a hook on a tensor inside the model shows nowhere else
        refuse(
            f"the gradient at {at} cannot be checked (no single module produces or reads it), and the gradient at "
            f"the model's input, which a backward replaced anywhere before the logits would change, misses float64 "
            f"finite differences by {describe(proof.through_input.error or 0.0)}",
            culprits,
        )
    return proof


def cannot_run(model64: AdaptedModel, x64: Tensor, exc: Exception) -> NoReturn:
    """The refusal of a model of the user's that cannot run in float64 (a feedback matrix kept
    as a plain attribute stays float32), naming where its backward is replaced."""
    detail = printable(str(getattr(exc, "cause", exc)).splitlines()[0][:120])
    what = f"the model's backward cannot be checked against float64 finite differences ({detail})"
    refuse(what, replaced_backward(model64, x64))


def refuse(what: str, culprits: dict[str, str]) -> NoReturn:
    """The refusal of every number resting on the BP gradient, naming where the backward is replaced."""
    blame = "; ".join(f"{printable(name)} ({how})" for name, how in list(culprits.items())[:6])
    more = f" and {len(culprits) - 6} more" if len(culprits) > 6 else ""
    raise InputError(
        f"{what}, so no number derived from the BP gradient can be reported; the backward is replaced in "
        f"{blame or 'a part of the forward that no module owns'}{more}: fa-audit audits known FA layers through "
        "plain twins, so register this layer's plain form with fa_audit.register_plain(LayerClass, to_plain), "
        "or save its state dict and audit the file with --arch and --method"
    )
