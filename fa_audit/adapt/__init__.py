"""Adapt: a loaded bundle becomes a model (via the adapter registry) and a method,
with the state dict and feedback checked against what the model actually has."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from model_adapters import AdaptedModel, AdapterConfigError, get_adapter
from model_adapters.base import InputShapeError, UserForwardError
from model_adapters.hooks import run_order, select

from ..conventions import Twin, attribute_convention, plain_beside, plain_twin, twin_note
from ..errors import InputError
from ..escape import printable, short
from ..loading import Bundle
from ..loading.checkpoint import FittedBundle
from ..loss_heads import DEFAULT as DEFAULT_LOSS
from ..loss_heads import LossHead, get_loss_head
from ..methods import CreditMethod, Probe, get_method

Tensor = torch.Tensor


def _listing(keys: list[str]) -> str:
    shown = ", ".join(sorted(keys)[:3])
    return shown + (f" (and {len(keys) - 3} more)" if len(keys) > 3 else "")


def fresh_model(bundle: Bundle, *, seed: int | None = None) -> AdaptedModel:
    """The bundle's architecture at its initialisation (seeded when ``seed`` is given), as
    its true-gradient twin (:func:`plain_twin`: known FA layers made plain), with the hidden
    states and deep blocks that --hidden and --deep name."""
    try:
        model = (bundle.builder or get_adapter(bundle.arch)).build(bundle.arch_config, seed=seed)
    except KeyError as exc:
        raise InputError(str(exc.args[0]), bundle.path) from None
    except AdapterConfigError as exc:
        raise InputError(f"cannot build {bundle.arch}: {exc}", bundle.path) from None
    try:
        options = bundle.options
        model = replace(made_plain(model, options.feedback_attr), batch_dim=options.batch_dim)
        return choose_modules(model, options.hidden, options.deep, options.bp_layers)
    except AdapterConfigError as exc:
        raise InputError(str(exc)) from None


_FILLS = frozenset({"normal_", "uniform_", "bernoulli_", "exponential_", "geometric_", "log_normal_", "cauchy_",
                    "random_", "erfinv_"})  # fmt: skip


class _SkipFills(TorchFunctionMode):
    """Filling a meta tensor with random values computes nothing, yet its first call goes
    through torch._refs, which imports torch._dynamo (2.6 s): skip it. Only value fills are
    skipped; anything that could change a shape runs."""

    def __torch_function__(
        self, func: Any, types: Any, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None
    ) -> Any:
        if getattr(func, "__name__", "") in _FILLS and args and isinstance(args[0], Tensor) and args[0].is_meta:
            return args[0]
        return func(*args, **(kwargs or {}))


class _Bounded(TorchDispatchMode):  # type: ignore[no-untyped-call]
    """A real build that may allocate at most ``budget`` bytes in new tensors: each factory
    (a size as its first argument) is counted before it runs, and refused past the budget."""

    def __init__(self, budget: int) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.budget, self.used = budget, 0

    def __torch_dispatch__(
        self, func: Any, types: Any, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None
    ) -> Any:
        size = args[0] if args else None
        if isinstance(size, list | tuple) and all(isinstance(n, int) for n in size):
            dtype = (kwargs or {}).get("dtype") or torch.get_default_dtype()
            self.used += math.prod(size) * torch.empty((), dtype=dtype).element_size()
            if self.used > self.budget:
                raise AdapterConfigError(
                    f"building it would allocate more than {self.budget >> 20} MiB, several times the checkpoint's "
                    "weights: the arch_config does not fit them"
                )
        return func(*args, **(kwargs or {}))


def skeleton_state(bundle: Bundle) -> dict[str, Tensor]:
    """The state dict the bundle's architecture has, keys and shapes only: built on the meta
    device, so an arch_config that does not fit the weights (width 6000 for weights of width
    96) never allocates its model, and the user's random initialisation is not run. A class
    that cannot be built there (legacy constructors, ``torch.Tensor(o, i)`` then
    ``.to(self.weight.device)``) is built for real, its allocations bounded by a few times the
    checkpoint's own weights."""
    try:
        with torch.device("meta"), _SkipFills():
            return fresh_model(bundle).module.state_dict()
    except InputError:
        if not bundle.arch.startswith("module:"):
            raise
    held = sum(t.numel() * t.element_size() for t in bundle.state_dict.values())
    with _Bounded(4 * held + (64 << 20)):
        return {k: v.to("meta") for k, v in fresh_model(bundle).module.state_dict().items()}


def made_plain(model: AdaptedModel, feedback_attr: str | None = None) -> AdaptedModel:
    """``model`` with the layers of known FA code replaced by their plain forms, and a note
    saying which: the gradient at its hidden states is then backprop's. Torch's own layers beside
    them were trained with backprop by that code: they become the model's ``bp_layers``."""
    return with_twin(model, plain_twin(model.module, attribute_convention(feedback_attr)))


def with_twin(model: AdaptedModel, twin: Twin) -> AdaptedModel:
    """``model``, whose module is ``twin``'s, with what the twin found: the note, the layers beside
    it trained with backprop, the credit points and the error point of its library."""
    note = twin_note(twin)
    if note is None:
        return model
    if len(twin.error_points) > 1:
        raise AdapterConfigError(
            f"the model has {len(twin.error_points)} modules that take the error direct feedback projects "
            f"({', '.join(map(printable, twin.error_points))}); fa-audit audits a model with one"
        )
    return replace(
        model,
        notes=(*model.notes, note),
        bp_layers=model.bp_layers or tuple(plain_beside(twin)),
        credit_points=model.credit_points or tuple(twin.points),
        replaced={**model.replaced, **twin.originals},
        error_point=model.error_point or next(iter(twin.error_points), None),
    )


def settle_error_point(model: AdaptedModel, x: Tensor) -> AdaptedModel:
    """No error point where its output is the model's output (TinyDFA's DFA wrapping the output
    layer): the output error is then exact in float64, not autograd's float32 copy of it."""
    if model.error_point is None:
        return model
    with torch.no_grad():
        logits, _, point = model.forward_with_point(x)
    if point is not None and point.shape == logits.shape and torch.equal(point, logits):
        return replace(model, error_point=None)
    return model


MAX_HIDDEN = 512


def choose_modules(
    model: AdaptedModel, hidden: Sequence[str], deep: Sequence[str], bp: Sequence[str] = ()
) -> AdaptedModel:
    """``hidden`` patterns make h_0..h_L the outputs of the modules they match (forward
    hooks); ``deep`` patterns the modules a frozen baseline keeps at initialisation,
    by default every hidden module after the first; ``bp`` patterns the Linear and Conv layers
    trained with backprop (in place of those :func:`made_plain` found)."""
    if hidden:
        names = tuple(select(model.module, hidden))
        if len(names) > MAX_HIDDEN:
            raise AdapterConfigError(
                f"--hidden {printable(','.join(hidden))} matches {len(names)} modules; at most {MAX_HIDDEN} hidden "
                "states can be audited (each has its own reference proof, null and diagnostics): name fewer"
            )
        model = replace(model, hidden_modules=names, deep_prefixes=tuple(f"{n}." for n in names[1:]), hooked=True)
    if deep:
        model = replace(model, deep_prefixes=tuple(f"{n}." for n in select(model.module, deep, "--deep")))
    if bp:
        layers = set(model.linear_layers())
        named = select(model.module, bp, "--bp-layers")
        other = [n for n in named if n not in layers]
        if other:
            raise AdapterConfigError(
                f"--bp-layers {printable(','.join(bp))} matches {printable(other[0])}, which is not a Linear or Conv "
                "layer (the layers whose W the backward uses)"
            )
        model = replace(model, bp_layers=tuple(named))
    if not model.hidden_modules:
        raise AdapterConfigError(
            "the model has no model.blocks, so fa-audit cannot tell its hidden states: name them with --hidden "
            "(hidden= in audit_module)"
        )
    return model


def order_hidden(model: AdaptedModel, x: Tensor, data_path: object = None) -> AdaptedModel:
    """Hooked hidden modules in the order the forward runs them (one forward on ``x``, the first
    sample of the eval data at ``data_path``, which a refusal names)."""
    if not model.hooked:
        return model
    points = [p for p in model.credit_points if p not in model.hidden_modules]
    try:
        names, notes = run_order(model.module, [*model.hidden_modules, *points], model.to_model(x))
    except AdapterConfigError as exc:
        raise InputError(str(exc)) from None
    except (RuntimeError, IndexError) as exc:  # before the shape probe: data the model cannot take
        raise _cannot_take(x, exc, data_path) from None
    names, moved = _at_credit_points(names, set(points))
    if moved:
        listed = ", ".join(f"{a} → {b}" for a, b in moved)
        notes.append(
            f"hidden states taken where the hooks apply their credit ({listed}): the output of each hook that "
            "runs after a named module, past whatever runs between them (BatchNorm, ReLU)"
        )
    return replace(model, hidden_modules=tuple(names), notes=(*model.notes, *notes))


def _at_credit_points(order: list[str], points: set[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """The hidden modules in run order, each replaced by the credit point that runs next after
    it (before the next hidden module); points no hidden module precedes are dropped."""
    names: list[str] = []
    moved: list[tuple[str, str]] = []
    pending = False
    for name in order:
        if name not in points:
            names.append(name)
            pending = True
        elif pending:
            moved.append((names[-1], name))
            names[-1], pending = name, False
    return names, moved


def build_model(bundle: Bundle) -> AdaptedModel:
    """The bundle's architecture with its weights loaded (float32, eval mode), the shapes
    checked on its :func:`skeleton_state` first."""
    fitted = bundle.skeleton if isinstance(bundle, FittedBundle) else None
    _check_state_fits(bundle, fitted or skeleton_state(bundle))
    model = fresh_model(bundle)
    model.module.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in bundle.state_dict.items()})
    model.module.float().eval()
    return model


def _check_state_fits(bundle: Bundle, expected: Mapping[str, Tensor]) -> None:
    missing = [k for k in expected if k not in bundle.state_dict]
    unexpected = [k for k in bundle.state_dict if k not in expected]
    if missing:
        raise InputError(
            f"state_dict lacks {_listing(missing)}, which {bundle.arch} {bundle.arch_config} has", bundle.path
        )
    if unexpected:
        raise InputError(
            f"state_dict has {_listing(unexpected)}, which {bundle.arch} {bundle.arch_config} does not", bundle.path
        )
    for key, want in expected.items():
        got = bundle.state_dict[key]
        if got.shape != want.shape:
            raise InputError(
                f"state_dict tensor {key!r} has shape {list(got.shape)} but the arch_config gives {list(want.shape)}",
                bundle.path,
            )


def resolve_method(bundle: Bundle) -> CreditMethod:
    return method_named(bundle.method or "", bundle.path)


def resolve_loss(meta: Mapping[str, Any], given: str | None, where: object = None) -> LossHead:
    """The loss head the command line or API call names (``given``), else the one the
    checkpoint's ``meta.loss`` names, else cross-entropy; the two differing is an input error
    naming both. A file may name registered heads only: ``module:`` code is imported only when
    the user names it."""
    named = meta.get("loss")
    place = None if where is None else str(where)
    if named is not None and (not isinstance(named, str) or named.startswith("module:")):
        raise InputError(
            f"meta.loss {short(named)} is not a registered loss head's name (a checkpoint cannot name code to run: "
            "pass --loss module:pkg.mod:fn to use your own)",
            place,
        )
    if given is not None and named is not None and given != named:
        raise InputError(f"--loss {short(given)} contradicts the checkpoint's meta.loss {short(named)}", place)
    try:
        return get_loss_head(given if given is not None else named if named is not None else DEFAULT_LOSS)
    except KeyError as exc:
        raise InputError(str(exc.args[0]), place) from None


def method_named(name: str, where: object = None) -> CreditMethod:
    """The registered method ``name``; an unknown one is an input error listing them."""
    try:
        return get_method(name)
    except KeyError as exc:
        raise InputError(str(exc.args[0]), None if where is None else str(where)) from None


def _cannot_take(x: Tensor, exc: BaseException, data_path: object) -> InputError:
    detail = str(exc).splitlines()[0][:120]
    return InputError(
        f"x has per-sample shape {list(x.shape[1:])}, which the model cannot take ({detail})",
        data_path if data_path is None else str(data_path),
    )


def batch_refused(model: AdaptedModel, exc: InputShapeError, size: int, start: int, data_path: object) -> InputError:
    """A model's refusal (:class:`InputShapeError`) of a whole batch, whose one sample the probe
    passed (a --batch-dim that moves the wrong axis): the data's problem, named with the batch."""
    moved = f"; --batch-dim {model.batch_dim} gives it x's samples along that dimension" * bool(model.batch_dim)
    return InputError(
        f"the batch of {size} samples from sample {start} cannot go through the model ({printable(str(exc))}){moved}",
        None if data_path is None else str(data_path),
    )


def probe(model: AdaptedModel, x: Tensor, data_path: object, head: LossHead | None = None) -> Probe:
    """One forward on one sample: the sizes feedback must have, and a shape check of x (and of
    the output, for ``head``)."""
    try:
        with torch.no_grad():
            logits, hidden, point = model.forward_with_point(x)
    except UserForwardError as exc:
        if not isinstance(exc.cause, RuntimeError):
            raise InputError(str(exc)) from None
        raise _cannot_take(x, exc.cause, data_path) from None
    except AdapterConfigError as exc:
        raise InputError(str(exc)) from None
    except (RuntimeError, IndexError) as exc:  # IndexError: a token id an embedding does not hold
        raise _cannot_take(x, exc, data_path) from None
    wrong = (head or get_loss_head(DEFAULT_LOSS)).check_output(logits)
    if wrong is not None or logits.shape[0] != x.shape[0]:
        raise InputError(
            f"x has per-sample shape {list(x.shape[1:])}, for which the model {wrong or 'gives another batch size'}",
            data_path if data_path is None else str(data_path),
        )
    tokens = int(logits.shape[1]) if logits.dim() == 3 else None
    widths = tuple(int(h[0].numel()) for h in hidden)
    projected = None if point is None else int(point[0].numel()) // (tokens or 1)
    return Probe(classes=int(logits.shape[-1]), widths=widths, tokens=tokens, projected=projected)


def check_feedback(
    method: CreditMethod, model: AdaptedModel, found: Probe, feedback: Mapping[str, Tensor], where: object
) -> dict[str, tuple[int, ...]]:
    """The shapes the method needs; extra keys or a wrong shape are input errors."""
    shapes = method.feedback_shapes(model, found)
    if not method.needs_feedback:
        return shapes
    extra = [k for k in feedback if k not in shapes]
    if extra:
        raise InputError(
            f"feedback has {_listing(extra)}, which is not a {method.name} feedback layer of this model "
            f"(expected keys: {_listing(list(shapes))})",
            str(where),
        )
    for key, tensor in feedback.items():
        if tuple(tensor.shape) != shapes[key]:
            flipped = tensor.dim() == 2 and tuple(tensor.shape[::-1]) == shapes[key]
            hint = "; its transpose has that shape: where your code multiplies by Bᵀ, save B.T" if flipped else ""
            raise InputError(
                f"feedback {key!r} has shape {list(tensor.shape)}, expected {list(shapes[key])}{hint}", str(where)
            )
    return shapes
