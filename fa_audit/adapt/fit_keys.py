"""Adapt, first step: a checkpoint's keys as its training code named them, fitted to the
adapter's. A prefix shared by every key is stripped when that makes them fit, the
``--rename`` rules are applied, and a library's feedback entries are split off the
weights (:mod:`fa_audit.conventions`). Each step is recorded for the report."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from dataclasses import fields as dataclass_fields
from typing import Any

import torch

from model_adapters import AdaptedModel

from ..conventions import (
    HOW_TO_SAVE,
    Convention,
    Layout,
    Mapped,
    attribute_convention,
    by_name,
    recognise,
    split_matrix,
)
from ..errors import InputError
from ..escape import printable
from ..loading import Bundle
from ..loading.checkpoint import FittedBundle
from ..loading.keys import averaged_counters, rename, shared_prefixes, subtree_prefixes, unwrapped, wrappers_in
from ..methods import CreditMethod, Probe, get_method
from . import skeleton_state

Tensor = torch.Tensor


@dataclass(frozen=True)
class _Split:
    state: dict[str, Tensor]
    found: dict[str, Tensor]
    convention: Convention | None


@dataclass(frozen=True)
class _Keys:
    """How the file's keys become the adapter's: the keys under ``prefix``, stripped of it, and
    whether the wrappers' components inside them (DataParallel's ``module``) are removed."""

    prefix: str = ""
    unwrap: bool = False

    def apply(self, entries: dict[str, Tensor]) -> dict[str, Tensor] | None:
        stripped = {k[len(self.prefix) :]: v for k, v in entries.items() if k.startswith(self.prefix)}
        return unwrapped(stripped) if self.unwrap else stripped


def _split(bundle: Bundle, fitted: dict[str, Tensor]) -> _Split:
    """The file's keys as :meth:`_Keys.apply` fitted them, renamed and split by their convention."""
    state = rename(fitted, list(bundle.options.renames), "state_dict")
    named = attribute_convention(bundle.options.feedback_attr)
    convention = named[0] if named else recognise(list(state), bundle.path)
    if convention is None or not any(convention.claims(k) for k in state):
        return _Split(state, {}, None)
    found = {k: v for k, v in state.items() if convention.claims(k)}
    rest = {k: v for k, v in state.items() if k not in found}
    try:
        return _Split(convention.rewrite_state(rest, found), found, convention)
    except InputError as exc:
        raise InputError(exc.problem, exc.path or bundle.path) from None


def fit_bundle(bundle: Bundle) -> FittedBundle:
    """The bundle with its weights under the adapter's names, its feedback entries split
    off, and its method fixed (by --method, the checkpoint, or the convention)."""
    if isinstance(bundle, FittedBundle):
        return bundle
    bundle = _without_counters(bundle)
    skeleton = skeleton_state(bundle)
    expected = set(skeleton)

    @functools.cache  # the chosen keys' split is made once, in the choice
    def split_by(keys: _Keys) -> _Split | None:
        fitted = keys.apply(bundle.state_dict)
        return None if fitted is None else _split(bundle, fitted)

    def fit(keys: _Keys) -> int:
        split = split_by(keys)
        return -1 if split is None else len(expected & set(split.state))

    keys = _chosen_keys(bundle, expected, fit)
    split = split_by(keys)
    assert split is not None, "a key fitting that merges two keys"
    loading: dict[str, Any] = dict(bundle.loading)
    notes = list(bundle.notes)
    left = [k for k in bundle.state_dict if not k.startswith(keys.prefix)]
    if left:
        loading["prefix_stripped"], loading["keys_unused"] = keys.prefix, len(left)
        shown = ", ".join(printable(k) for k in left[:3]) + (", ..." if len(left) > 3 else "")
        others = f"the {len(left)} other keys ({shown}) were" if len(left) > 1 else f"the other key ({shown}) was"
        notes.append(f"the network is the state dict's keys under {keys.prefix!r}; {others} left unused")
    elif keys.prefix:
        loading["prefix_stripped"] = keys.prefix
        notes.append(f"the prefix {keys.prefix!r} shared by every state-dict key was stripped")
    if keys.unwrap:
        removed = wrappers_in([k[len(keys.prefix) :] for k in bundle.state_dict if k.startswith(keys.prefix)])
        loading["wrappers_removed"] = removed
        notes.append(
            f"the {' and '.join(map(repr, removed))} components inside the keys (a submodule wrapped alone in "
            "DataParallel or torch.compile, as in features.module.0.weight) were removed"
        )
    if bundle.options.renames:
        loading["renames"] = [str(r) for r in bundle.options.renames]
    method = bundle.method
    if split.convention is not None:
        loading["convention"] = split.convention.name
        method = method or split.convention.method(split.found, split.state)
        applied = None if method is None else split.convention.credit_method(method)
        if applied is not None and applied != method:
            described = get_method(applied).description
            notes.append(f"{split.convention.name}'s {method} is audited as {applied}: {described}")
            method = applied
    elif bundle.options.convention is not None:
        loading["convention"] = bundle.options.convention
    elif bundle.options.feedback_attr is not None:
        loading["convention"] = f"attribute:{bundle.options.feedback_attr}"
    if method is None:
        found = f" ({split.convention.description})" if split.convention else ""
        raise InputError(f"does not say its training method{found}; pass --method", bundle.path)
    fields_ = {f.name: getattr(bundle, f.name) for f in dataclass_fields(Bundle)}
    return FittedBundle(
        **{
            **fields_,
            "method": method,
            "state_dict": split.state,
            "feedback": rename(_feedback_keys(bundle, keys), list(bundle.options.renames), "feedback"),
            "loading": loading,
            "notes": tuple(notes),
        },
        found=split.found,
        skeleton=skeleton,
    )


MAX_COPIES = 16
"""Prefixes tried as a copy of the network, in the order their keys come: each is one more pass over every
key, and a file's prefixes are its own to multiply."""


def _chosen_keys(bundle: Bundle, expected: set[str], fit: Callable[[_Keys], int]) -> _Keys:
    """The keys that fit the adapter best: under ``--key-prefix`` where it is given; else under a prefix
    shared by every key (none, ``module.``, ``model.``); else, where those leave keys missing, the one
    complete copy of the network that the state dict holds beside other things (a LightningModule's
    model beside its loss's parameters). Two complete copies (a model and its EMA) are refused: which
    one a paper reports, the file does not say. On a tie the first: the one that changes least."""
    keys = list(bundle.state_dict)
    named = bundle.options.key_prefix
    if named is not None:
        prefix = named if not named or named.endswith(".") else f"{named}."
        if not any(k.startswith(prefix) for k in keys):
            raise InputError(f"no state-dict key starts with {printable(prefix)!r} (--key-prefix)", bundle.path)
        return max([_Keys(prefix), _Keys(prefix, unwrap=True)], key=fit)
    prefixes = ["", *shared_prefixes(keys)]
    best = max([_Keys(p) for p in prefixes] + [_Keys(p, unwrap=True) for p in prefixes], key=fit)
    if fit(best) >= len(expected):
        return best
    copies, every = _whole_copies(bundle, expected, fit)
    if len(copies) > 1:
        shown = [printable(c.prefix) for c in copies]
        where = " and ".join(map(repr, shown)) if len(shown) < 4 else ", ".join(map(repr, shown[:3])) + ", ..."
        raise InputError(
            f"the state dict holds {'' if every else 'at least '}{len(copies)} complete copies of the network, under "
            f"{where} (a model beside its EMA or SWA copy, a student beside its teacher): name the one to audit "
            "with --key-prefix (key_prefix= in the API)",
            bundle.path,
        )
    return copies[0] if copies else best


def _whole_copies(bundle: Bundle, expected: set[str], fit: Callable[[_Keys], int]) -> tuple[list[_Keys], bool]:
    """Each complete copy of the network under a prefix (:func:`subtree_prefixes`), once (the keys
    ``ema.`` takes with its wrapper removed are the ones ``ema.module.`` takes as they are), and
    whether every prefix that holds enough keys was tried (:data:`MAX_COPIES`)."""
    keys = list(bundle.state_dict)
    held = subtree_prefixes(keys, expected)
    enough = [p for p, count in held.items() if count >= len(expected)]
    prefixes = enough[:MAX_COPIES]
    found: dict[frozenset[str], _Keys] = {}
    for candidate in [_Keys(p) for p in prefixes] + [_Keys(p, unwrap=True) for p in prefixes]:
        taken = frozenset(k for k in keys if k.startswith(candidate.prefix))
        if taken in found:
            continue
        try:
            whole = fit(candidate) >= len(expected)
        except InputError:  # a subset no convention reads as one network is not a copy of it
            continue
        if whole:
            found[taken] = candidate
    return list(found.values()), len(prefixes) == len(enough)


def _without_counters(bundle: Bundle) -> Bundle:
    counters = averaged_counters(list(bundle.state_dict))
    if not counters:
        return bundle
    state = {k: v for k, v in bundle.state_dict.items() if k not in counters}
    said = ", ".join(printable(k) for k in counters)
    note = f"{said}, the step counter of torch's AveragedModel (SWA, EMA), is not a weight: left out"
    return replace(bundle, state_dict=state, notes=(*bundle.notes, note))


def _feedback_keys(bundle: Bundle, keys: _Keys) -> dict[str, Tensor]:
    """A feedback dict saved beside the state dict names its layers as the state dict does, wrappers included."""
    if not keys.unwrap:
        return dict(bundle.feedback)
    feedback = unwrapped(bundle.feedback)
    if feedback is None:
        raise InputError("has two feedback keys that become one without the wrappers' components inside them "
                         "(module, _orig_mod)", bundle.path)  # fmt: skip
    return feedback


def consumers(model: AdaptedModel, x: Tensor) -> tuple[dict[str, int], tuple[tuple[int, ...], ...], dict[str, str]]:
    """Each layer whose input is a hidden state h_l, with l, found by one forward pass
    with pre-hooks matching the very tensor objects; each h_l's per-sample shape; and, for the
    layers that read no hidden state, the module whose output they read (a max-pool's)."""
    inputs: dict[str, Tensor] = {}
    outputs: list[tuple[str, Tensor]] = []

    def record(name: str) -> Any:
        def hook(module: torch.nn.Module, args: tuple[Any, ...]) -> None:
            if args and isinstance(args[0], Tensor):
                inputs.setdefault(name, args[0])

        return hook

    def produced(name: str) -> Any:
        def hook(module: torch.nn.Module, args: tuple[Any, ...], out: Any) -> None:
            if isinstance(out, Tensor):
                outputs.append((name, out))

        return hook

    modules = dict(model.module.named_modules())
    leaves = [n for n, m in modules.items() if n and not list(m.children())]
    with _hooked(modules, {name: produced(name) for name in leaves}):
        _, hidden = model.forward_watched(x, {name: record(name) for name in model.linear_layers()}, pre=True)
    # A layer may read h_l through a view: the head of a conv net reads h.flatten(1).
    reads = {name: i for name, t in inputs.items() for i, h in enumerate(hidden) if t is h or t._base is h}
    makers = {
        name: maker
        for name, t in inputs.items()
        if name not in reads
        for maker, out in outputs
        if out is t or t._base is out
    }
    return reads, tuple(tuple(h.shape[1:]) for h in hidden), makers


@contextmanager
def _hooked(modules: dict[str, torch.nn.Module], hooks: dict[str, Any]) -> Iterator[None]:
    handles = [modules[name].register_forward_hook(hook) for name, hook in hooks.items()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@dataclass(frozen=True)
class _Source:
    what: str
    feedback: dict[str, Tensor]
    loading: dict[str, Any]
    notes: list[str]


def feedback_for(
    bundle: FittedBundle, model: AdaptedModel, method: CreditMethod, found: Probe, x: Tensor
) -> tuple[dict[str, Tensor], dict[str, Any], list[str]]:
    """The feedback by the method's keys, with what the report says about where it came from.
    Where a checkpoint offers it twice (convention entries in its state dict, a list in its
    container, its own field, a sidecar or --feedback), the sources must agree: two that
    differ are an input error naming both, identical ones are read once."""
    if bundle.options.convention == "tinydfa":
        return _tinydfa(bundle, model, found)
    sources = [s for s in (_by_convention(bundle, model, method, found, x), _listed(bundle, model, method, found)) if s]
    if bundle.feedback:
        where = "its feedback field" if bundle.feedback_path is None else printable(str(bundle.feedback_path))
        sources.append(_Source(where, dict(bundle.feedback), {}, []))
    if not sources:
        return {}, {}, []
    first, *others = sources
    for other in others:
        if not _same(first.feedback, other.feedback):
            raise InputError(
                f"offers feedback twice, and the two differ: {first.what} and {other.what}; remove one of them, "
                "so that the audit cannot read the wrong one",
                bundle.path,
            )
    again = [f"the same feedback is also in {o.what}: read once" for o in others]
    return first.feedback, first.loading, [*first.notes, *again]


def _same(a: dict[str, Tensor], b: dict[str, Tensor]) -> bool:
    return a.keys() == b.keys() and all(a[k].shape == b[k].shape and torch.equal(a[k], b[k].to(a[k].dtype)) for k in a)


def _tinydfa(
    bundle: FittedBundle, model: AdaptedModel, found: Probe
) -> tuple[dict[str, Tensor], dict[str, Any], list[str]]:
    if "feedback_matrix" not in bundle.feedback:
        raise InputError(f"--convention tinydfa needs TinyDFA's matrix: {HOW_TO_SAVE}", bundle.path)
    where = bundle.feedback_path or bundle.path
    matrix = bundle.feedback["feedback_matrix"]
    widths = tuple(w // (found.tokens or 1) for w in found.widths)  # per position, as batch_dims=(0, 1) splits
    fb = split_matrix(matrix, model.hidden_modules, widths, where)  # type: ignore[arg-type]
    sources = {k: f"feedback_matrix[:, :{widths[i]}] / sqrt({matrix.shape[1]})" for i, k in enumerate(fb)}
    return fb, {"feedback_sources": sources}, []


def _by_convention(
    bundle: FittedBundle, model: AdaptedModel, method: CreditMethod, found: Probe, x: Tensor
) -> _Source | None:
    kind = method.feedback_kind
    if not bundle.found or kind is None:
        return None
    convention = by_name(bundle.loading["convention"])  # recognised once, by fit_bundle
    reads, shapes, makers = consumers(model, x)
    layers = {name: m for name, m in model.module.named_modules() if name in reads}
    layout = Layout(kind, model.hidden_modules, reads, found.classes, shapes, layers, makers)
    mapped: Mapped = convention.map(bundle.found, layout, bundle.path)
    named = ", ".join(f"{src} → {dst}" for dst, src in mapped.sources.items())
    note = f"feedback read by the {convention.name} convention: {named or 'no entry fits this model'}"
    what = f"the {convention.name} entries in its state dict"
    return _Source(what, mapped.feedback, {"feedback_sources": mapped.sources}, [note, *mapped.notes])


def _listed(bundle: FittedBundle, model: AdaptedModel, method: CreditMethod, found: Probe) -> _Source | None:
    if not bundle.feedback_list:
        return None
    keys = list(method.feedback_shapes(model, found))
    if len(keys) != len(bundle.feedback_list):
        raise InputError(
            f"holds a list of {len(bundle.feedback_list)} feedback matrices; {method.name} on this model "
            f"needs {len(keys)} ({', '.join(keys)}), in that order",
            bundle.path,
        )
    return _Source(
        "its list of feedback matrices",
        dict(zip(keys, bundle.feedback_list, strict=True)),
        {"feedback_sources": {k: f"[{i}]" for i, k in enumerate(keys)}},
        [f"feedback given as a list, taken in the order of {method.name}'s layers: {', '.join(keys)}"],
    )
