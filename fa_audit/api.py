"""The library API: ``audit()`` runs the whole pipeline on files; ``audit_bundle()`` on
objects already in memory (a training loop can call it every few epochs)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch

from model_adapters import AdaptedModel, AdapterConfigError
from model_adapters.module_path import load_function, users_code

from .adapt import (
    build_model,
    check_feedback,
    order_hidden,
    probe,
    resolve_loss,
    resolve_method,
    settle_error_point,
)
from .adapt.fit_keys import feedback_for, fit_bundle
from .checks import run_checks, verdict
from .checks.baseline import Baseline, baseline_info
from .checks.baseline_cache import cache_dir as baseline_cache_dir
from .checks.frozen_baseline import Fitted, budget_note, fit_baseline
from .checks.margin import with_error
from .config import Thresholds, bounded_null, looser_than_protocol
from .conventions.twin import check_twins
from .errors import InputError
from .escape import printable, short
from .loading import (
    Bundle,
    EvalData,
    Overrides,
    checkpoint_dtype,
    load_bundle,
    load_eval_data,
    sha256,
    verify_unchanged,
)
from .loading.data import eval_data_from_batches
from .loading.keys import Rename
from .loss_heads import LossHead
from .loss_heads.cross_entropy import CROSS_ENTROPY
from .measure.functional import median_ranks
from .measure.precision import ieee_float32
from .measure.ranks import ALONE, Ranks, raise_first
from .measure.run import complete_feedback, measure
from .methods import CreditMethod, Probe
from .report import INTERVAL_CONFIDENCE, AuditReport, BaselineInfo, json_safe
from .report.comparison import Comparison, compare_reports, different_networks
from .settings import AuditSettings

Tensor = torch.Tensor
T = TypeVar("T")
MAX_BATCH = 1 << 20


class ProgressCallback(Protocol):
    """``(done, total, what)``: what is under way ("auditing", "fitting the baseline")."""

    def __call__(self, done: int, total: int, what: str = "auditing") -> None: ...


def data_path_for(bundle: Bundle, data: Path | None, key: str = "data") -> Path:
    """``data`` when given, else the file the checkpoint's ``meta[key]`` names: a
    relative path inside the checkpoint's own folder, never one a file may point anywhere."""
    if data is not None:
        return data
    named = bundle.meta.get(key)
    flag, what = ("--data", "eval data") if key == "data" else ("--train-data", "train data")
    if not isinstance(named, str) or bundle.path is None:
        raise InputError(f"no {what}: pass {flag} or name it in the checkpoint's meta.{key}", bundle.path)
    folder = bundle.path.parent.resolve()
    target = (folder / named).resolve()
    if Path(named).is_absolute() or not target.is_relative_to(folder):
        raise InputError(
            f"meta.{key} {short(named)} is not a relative path inside the checkpoint's folder; pass {flag}", bundle.path
        )
    if not target.exists():  # a checkpoint copied without its data (from a wheel, a download)
        raise InputError(
            f"the {what} its meta.{key} names, {short(named)}, is not beside it; pass {flag} FILE", bundle.path
        )
    if target.is_dir():  # "" or "." names the checkpoint's own folder
        raise InputError(f"meta.{key} {short(named)} names a folder, not a file; pass {flag} FILE", bundle.path)
    return bundle.path.parent / named


def load_baseline(path: str | Path, settings: AuditSettings | None = None) -> Baseline:
    """A frozen-blocks baseline file, read as the audited checkpoint's command line says (--arch,
    --arch-config, --hidden, --deep, key options: a ``module:`` class or a bare state dict is the
    same architecture for both), but with its own method: one it does not name is ``frozen``,
    which is what it is given as."""
    s = AuditSettings.of(settings, {})
    read = replace(s, method=None, feedback=None, feedback_key=None, convention=None)
    bundle = load(path, read)
    return Baseline(fit_bundle(bundle if bundle.method is not None else replace(bundle, method="frozen")))


def _chosen_modules(model: AdaptedModel, bundle: Bundle) -> dict[str, Any]:
    """The hidden and deep modules, when --hidden or --deep chose them; the samples' dimension and
    the error point, where the model has them: what the audit assumed, in the report."""
    chosen: dict[str, Any] = {}
    if bundle.options.hidden or bundle.options.deep:
        chosen = {"hidden_modules": list(model.hidden_modules), "deep_modules": [p[:-1] for p in model.deep_prefixes]}
    if model.batch_dim:
        chosen["batch_dim"] = model.batch_dim
    if model.error_point is not None:
        chosen["error_point"] = model.error_point
    return chosen


def audit_bundle(
    bundle: Bundle,
    data: EvalData,
    settings: AuditSettings | None = None,
    *,
    on_progress: ProgressCallback | None = None,
    **changes: Any,
) -> AuditReport:
    """Audit a checkpoint held in memory against eval data, by ``settings`` (with
    ``changes``, :class:`AuditSettings` field names; the data and the loading fields are
    not used here). The depth check's baseline is a frozen-blocks checkpoint
    (``baseline``) or an accuracy measured elsewhere (``baseline_accuracy``, a fraction)."""
    s = AuditSettings.of(settings, changes)
    batch_size, max_samples, seed = s.batch_size, s.max_samples, s.seed
    if not 1 <= batch_size <= MAX_BATCH or (max_samples is not None and max_samples < 1):
        raise InputError(f"--batch-size must be from 1 to {MAX_BATCH} and --max-samples positive")
    if not 0 <= seed < 2**63:
        raise InputError(f"--seed must be from 0 to 2**63 - 1, not {short(seed)}")
    thresholds = s.thresholds()
    dev = s.torch_device()
    bundle = fit_bundle(bundle)
    head = resolve_loss(bundle.meta, s.loss, bundle.path)
    given = load_baseline(s.baseline, s) if isinstance(s.baseline, str | Path) else s.baseline
    base = baseline_info(  # a baseline that cannot serve is refused before the audit runs
        bundle, given, s.baseline_accuracy, lambda b: b.hits(data, batch_size, max_samples, dev, head), head.metric
    )
    first = data.first().to(dev)
    model = build_model(bundle)
    model.module.to(dev)
    model = settle_error_point(order_hidden(model, first, data.path), first)
    method = resolve_method(bundle)
    if method.feedback_kind == "layer" and not model.feedback_layers():
        raise InputError(
            f"method {method.name!r} sends the error back through each Linear or Conv layer's B, and this model has "
            "none that fa-audit knows: layers of your own that keep B as an attribute (self.B) are read with "
            "--feedback-attr B (feedback_attr= in the API); others need fa_audit.register_plain",
            bundle.path,
        )
    if model.batch_dim and method.feedback_kind == "layer":
        raise InputError(
            f"--batch-dim {model.batch_dim} audits direct methods (dfa, drtp) and bp; method {method.name!r} walks "
            "the network backward layer by layer, which fa-audit does with the samples first only",
            bundle.path,
        )
    if method.projects_labels and head.targets not in ("labels", "values"):
        raise InputError(
            f"method {method.name!r} projects each sample's target row, so it needs a loss head whose targets are "
            f"labels or rows of the output's shape (cross_entropy, bce, mse), not {printable(head.name)}",
            bundle.path,
        )
    found = probe(model, first, data.path, head)
    check_twins(model.module, model.replaced, model.to_model(data.first(min(data.samples, 8)).to(dev)))
    stored, loading, loading_notes = feedback_for(bundle, model, method, found, first)
    notes = [*bundle.notes, *model.notes, *loading_notes, *_layout_notes(model)]
    if model.bp_layers and method.feedback_kind == "layer":
        loading["bp_layers"] = list(model.bp_layers)
        notes.append(_bp_note(model, bool(bundle.options.bp_layers)))
        unused = sorted(set(stored) & set(model.bp_layers))
        if unused:
            stored = {k: v for k, v in stored.items() if k not in unused}
            notes.append(f"the file's feedback for {', '.join(map(printable, unused))} is not used: backprop trains it")
    if bundle.feedback and not method.needs_feedback:
        notes.append(f"the checkpoint carries feedback weights, which method {method.name!r} does not use")
    subject = Subject(
        name=str(bundle.path) if bundle.path else "<in memory>",
        arch=bundle.arch,
        model=model,
        method=method,
        feedback=stored,
        feedback_source=bundle.feedback_path or bundle.path,
        dtype=checkpoint_dtype(bundle.state_dict),
        notes=notes,
        meta=json_safe(bundle.meta),
        loading={**bundle.loading, **loading, **_chosen_modules(model, bundle)},
        loss=head,
    )
    ranks = Ranks.current(s.distributed)
    return audit_subject(subject, data, found, thresholds, base, dev, batch_size, max_samples, seed, on_progress, ranks)


def _layout_notes(model: AdaptedModel) -> list[str]:
    notes = []
    if model.batch_dim:
        notes.append(f"the model's tensors hold the samples along dimension {model.batch_dim} (--batch-dim): "
                     "every number is per sample, the eval data's rows")  # fmt: skip
    if model.error_point is not None:
        notes.append(f"the direct feedback projects the gradient at the input of {printable(model.error_point)}, "
                     "where the library takes its error (before the output layer), not the output error")  # fmt: skip
    return notes


def _bp_note(model: AdaptedModel, declared: bool) -> str:
    named = ", ".join(printable(n) for n in model.bp_layers)
    why = "as --bp-layers says" if declared else (
        "torch's own layers beside layers of FA code, which train them with backprop; --bp-layers names others"
    )  # fmt: skip
    return f"a mixed network: {named} trained with backprop ({why}), so the credit goes through their own W"


@dataclass(frozen=True)
class Subject:
    """What is audited, however it was obtained (a checkpoint file, a live module)."""

    name: str
    arch: str
    model: AdaptedModel
    method: CreditMethod
    feedback: dict[str, Tensor]
    """As stored, by the method's keys (checked here against the model)."""
    feedback_source: object
    dtype: str
    notes: list[str]
    meta: dict[str, Any]
    loading: dict[str, Any]
    loss: LossHead = CROSS_ENTROPY


def audit_subject(
    subject: Subject,
    data: EvalData,
    found: Probe,
    thresholds: Thresholds,
    base: BaselineInfo | None,
    dev: torch.device,
    batch_size: int,
    max_samples: int | None,
    seed: int,
    on_progress: ProgressCallback | None,
    ranks: Ranks = ALONE,
) -> AuditReport:
    """Measure, check and report: the part every way into an audit shares. With more than
    one rank, each measures its shard: a contiguous part of ``data`` cut at whole batches,
    or, when ``data.sharded``, all of its own."""
    model, method = subject.model, subject.method
    shapes = check_feedback(method, model, found, subject.feedback, subject.feedback_source)
    method.check_stored(subject.feedback, subject.feedback_source, model)
    feedback = complete_feedback(method.feedback_from(model, subject.feedback), shapes)
    held = data.samples if max_samples is None else min(max_samples, data.samples)
    if data.sharded:
        start, stop = 0, held
        first_sample, whole = ranks.offset(held)
    else:
        unit = math.lcm(batch_size, thresholds.reference_validity.direction_stability_batch)
        start, stop = ranks.shard(held, unit)
        first_sample, whole = start, held
    total = stop - start
    done = 0
    null_samples = min(whole, thresholds.null_calibration.samples_for(method.walks_per_draw) or whole)
    bounded = bounded_null(thresholds.null_calibration, null_samples, whole)
    notes = list(subject.notes)
    looser = looser_than_protocol(thresholds)
    if looser is not None:
        notes.append(looser)
    if bounded != thresholds.null_calibration:
        notes.append(
            f"null draws capped at {bounded.draws} (at most {max(bounded.max_draws, bounded.max_walk_draws)} in all) "
            f"on {null_samples} samples: the null's work is kept in proportion to the audit's pass"
        )
        thresholds = replace(thresholds, null_calibration=bounded)

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if on_progress is not None:
            on_progress(done, total)

    with ieee_float32(), _model_errors():
        measurements = measure(
            model,
            method,
            feedback,
            data.batches(batch_size, subject.loss, found.classes, stop, first=start),
            thresholds,
            device=dev,
            seed=seed,
            checkpoint_dtype=subject.dtype,
            expected_samples=whole,
            first_sample=first_sample,
            ranks=ranks,
            source=data.path,
            on_batch=advance,
            head=subject.loss,
        )
    if base is not None:
        if measurements.metric == "accuracy":
            _check_beats_chance(base, measurements.majority_fraction, thresholds)
        elif measurements.constant_loss is not None:
            _check_beats_constant(base, measurements.constant_loss, thresholds)
        base = with_error(base, measurements.accuracy, measurements.samples, measurements.hits, measurements.metric)
    if median_ranks(measurements.samples, INTERVAL_CONFIDENCE) is None:
        notes.append(
            f"{measurements.samples} eval samples are too few for a median's 95 % interval (at least 6): growth and "
            "‖g‖/‖e‖ are judged on their medians alone, with no uncertainty"
        )
    checks = run_checks(measurements, thresholds, base)
    settings: dict[str, Any] = {
        "device": str(dev),
        "batch_size": batch_size,
        "max_samples": max_samples,
        "seed": seed,
        "null_draws": thresholds.null_calibration.draws,
        "null_samples": null_samples,
        "world_size": ranks.world,
    }
    return AuditReport(
        checkpoint=subject.name,
        arch=subject.arch,
        method=method.name,
        inputs={},
        thresholds=thresholds,
        settings=settings,
        measurements=measurements,
        baseline=base,
        checks=checks,
        verdict=verdict(checks, measurements),
        notes=notes,
        meta=subject.meta,
        loading=subject.loading,
    )


def _check_beats_chance(base: BaselineInfo, majority: float, thresholds: Thresholds) -> None:
    """A frozen-blocks baseline trains its interface, so it beats always answering the most common
    label; one that does not by the margin (an untrained or zeroed head, in a file or a cache entry)
    would make any network look useful, and is refused. A number the user typed is theirs."""
    if base.source == "supplied":
        return
    margin = thresholds.depth_utility.min_margin_pp
    if base.accuracy < majority + margin / 100:
        raise InputError(
            f"cannot serve as the frozen-blocks baseline: it reaches {base.accuracy:.4f}, no better than always "
            f"answering the eval set's most common label ({majority:.4f}) by the {margin:g} pp margin: its interface "
            "is untrained (or was changed)",
            base.path,
        )


def _check_beats_constant(base: BaselineInfo, constant: float, thresholds: Thresholds) -> None:
    """The same for a loss metric: a frozen-blocks baseline must reduce the loss of the best constant
    output (each output's mean target, or label frequency) by the margin a model must reduce its own."""
    if base.source == "supplied":
        return
    pct = thresholds.depth_utility.min_loss_reduction_pct
    if base.accuracy > constant * (1 - pct / 100):
        raise InputError(
            f"cannot serve as the frozen-blocks baseline: its mean loss {base.accuracy:.4g} is not {pct:g} % below "
            f"{constant:.4g}, the loss of a constant output (each output's mean target over the eval set): its "
            "interface is untrained (or was changed)",
            base.path,
        )


@contextmanager
def _model_errors() -> Iterator[None]:
    """The user's model failing inside the audit's passes (model_adapters.base.users_forward) is bad input."""
    try:
        yield
    except AdapterConfigError as exc:
        raise InputError(str(exc)) from None


def load(checkpoint: str | Path, settings: AuditSettings | None = None, **changes: Any) -> Bundle:
    """A checkpoint file as a :class:`Bundle`, read as ``settings``' loading fields say."""
    s = AuditSettings.of(settings, changes)
    if s.convention not in (None, "tinydfa"):
        raise InputError(
            f"--convention {short(s.convention)}: the one convention to name is tinydfa (others are recognised)"
        )
    overrides = Overrides(
        arch=s.arch,
        arch_config=None if s.arch_config is None else dict(s.arch_config),
        method=s.method,
        feedback=None if s.feedback is None else Path(s.feedback),
        state_dict_key=s.state_dict_key,
        key_prefix=s.key_prefix,
        feedback_key=s.feedback_key,
        renames=tuple(Rename.parse(r) for r in s.rename),
        convention=s.convention,
        hidden=tuple(s.hidden),
        deep=tuple(s.deep),
        bp_layers=tuple(s.bp_layers),
        batch_dim=s.batch_dim,
        feedback_attr=s.feedback_attr,
    )
    return load_bundle(Path(checkpoint), overrides)


def audit(
    checkpoint: str | Path | Bundle,
    settings: AuditSettings | None = None,
    *,
    on_progress: ProgressCallback | None = None,
    **changes: Any,
) -> AuditReport:
    """Audit the checkpoint file ``checkpoint`` (or a bundle already loaded from one, to
    which the loading settings were applied then) by ``settings``, with ``changes``
    (:class:`AuditSettings` field names: ``audit(path, data=..., device="cpu")``); raises
    :class:`InputError` on bad input.

    The depth check's baseline is a frozen-blocks checkpoint (``baseline``), an accuracy
    measured elsewhere (``baseline_accuracy``), or fitted here (``fit_baseline`` on
    ``train_data``, else the file ``meta.train_data`` names; cached under ``cache_dir``
    unless ``use_cache`` is false)."""
    s = AuditSettings.of(settings, changes)
    data, max_samples = s.data, s.max_samples
    digests: dict[Path, str] = {}
    functions: dict[str, str | None] = {}

    def read() -> tuple[Thresholds, Bundle, EvalData, Baseline | BaselineInfo | None]:
        thresholds, config = s.thresholds(), s.config_file()
        digests.update({} if config is None else {config: sha256(config)})
        bundle = checkpoint if isinstance(checkpoint, Bundle) else load(checkpoint, s)
        digests.update(bundle.digests)
        layout = resolve_loss(bundle.meta, s.loss, bundle.path).targets
        if is_function(data):
            eval_data = data_from_function(str(data), max_samples, layout)
            functions[str(data)] = None  # the report names the function where a file would have its hash
        else:
            data_path = data_path_for(bundle, None if data is None else Path(data))
            if data_path.is_file():
                digests[data_path] = sha256(data_path)
            eval_data = load_eval_data(data_path, layout)
        given = load_baseline(s.baseline, s) if isinstance(s.baseline, str | Path) else s.baseline
        return thresholds, bundle, eval_data, given

    agreed = _agreed(Ranks.current(s.distributed), read, lambda done: _fingerprint(s, digests, done[0]))
    thresholds, bundle, eval_data, base = agreed
    fitted = None
    if s.fit_baseline:
        if base is not None or s.baseline_accuracy is not None:
            raise InputError("give one of --baseline, --baseline-accuracy and --fit-baseline")
        train_data = s.train_data
        train_path = data_path_for(bundle, None if train_data is None else Path(train_data), key="train_data")
        digests[train_path] = sha256(train_path)
        fitted = _fitted(bundle, train_path, eval_data, digests, thresholds, s, on_progress)
        base = fitted.info
    report = audit_bundle(bundle, eval_data, s, on_progress=on_progress, config=thresholds, baseline=base)
    digests = {**bundle.digests, **digests, **(base.bundle.digests if isinstance(base, Baseline) else {})}
    verify_unchanged(digests)
    inputs = {**{str(p): d for p, d in digests.items()}, **functions}
    if fitted is not None:  # the cache entry read is named with the hash of the bytes that were used
        inputs.update({} if fitted.read is None else {str(fitted.read[0]): fitted.read[1]})
        said = [n for n in (fitted.note, budget_note(bundle)) if n]
        report = replace(report, notes=[*report.notes, *said])
    return replace(report, inputs=inputs)


def _fingerprint(s: AuditSettings, digests: Mapping[Path, str], thresholds: Thresholds) -> dict[str, str]:
    """What every rank of one audit must share: the files' bytes, every setting but the device."""
    held = {f.name: getattr(s, f.name) for f in fields(AuditSettings) if f.name not in ("device", "baseline", "config")}
    base = s.baseline.bundle.digests if isinstance(s.baseline, Baseline) else s.baseline
    return {
        "files": json.dumps(sorted(digests.values())),
        "settings": repr(sorted(held.items())),
        "baseline": repr(sorted(base.values()) if isinstance(base, dict) else base),
        "thresholds": json.dumps(thresholds.to_dict(), sort_keys=True),
    }


def _agreed(ranks: Ranks, read: Callable[[], T], fingerprint: Callable[[T], dict[str, str]]) -> T:
    """``read()`` on every rank, which then all check that they audit the same thing (the
    ``fingerprint`` of what each read) before any sum is merged: an error on any rank is raised
    on all (none waits for the others), and ranks that read other files or settings stop with
    one sentence naming what differs."""
    if ranks.world == 1:
        return read()
    try:
        done = read()
        result: T | None = done
        outcome: tuple[dict[str, str] | None, BaseException | None] = (fingerprint(done), None)
    except Exception as exc:
        result, outcome = None, (None, exc)
    gathered = ranks.gather(outcome)
    raise_first([error for _, error in gathered])
    prints = [p for p, _ in gathered if p is not None]
    differ = sorted({key for p in prints for key in p if p[key] != prints[0][key]})
    if differ:
        ranks_off = [i for i, p in enumerate(prints) if any(p[k] != prints[0][k] for k in differ)]
        raise InputError(
            f"the ranks do not audit the same thing: rank {ranks_off[0]}'s {' and '.join(differ)} "
            f"{'differs' if differ == ['baseline'] else 'differ'} from rank "
            "0's; every rank must read the same checkpoint, data and settings"
        )
    assert result is not None
    return result


def _fitted(
    bundle: Bundle,
    train_path: Path,
    eval_data: EvalData,
    digests: dict[Path, str],
    thresholds: Thresholds,
    s: AuditSettings,
    on_progress: ProgressCallback | None,
) -> Fitted:
    meta_seed = bundle.meta.get("seed")
    head = resolve_loss(bundle.meta, s.loss, bundle.path)
    return fit_baseline(
        fit_bundle(bundle),
        load_eval_data(train_path, head.targets),
        eval_data,
        train_sha=digests[train_path],
        budget=thresholds.depth_utility.baseline,
        seed=meta_seed if isinstance(meta_seed, int) and not isinstance(meta_seed, bool) else s.seed,
        device=s.torch_device(),
        max_samples=s.max_samples,
        cache=baseline_cache_dir(s.cache_dir) if s.use_cache else None,
        on_progress=None
        if on_progress is None
        else lambda done, total: on_progress(done, total, "fitting the baseline"),
        head=head,
    )


def is_function(data: str | Path | None) -> bool:
    return data is not None and str(data).startswith("module:")


def data_from_function(spec: str, max_samples: int | None, layout: str = "labels") -> EvalData:
    """``--data module:pkg.mod:function``: the (x, y) batches a function of the user's code returns."""
    try:
        function = load_function(spec)
        with users_code(f"calling {spec.removeprefix('module:')}"):
            return eval_data_from_batches(function(), Path(spec), max_samples, layout)
    except AdapterConfigError as exc:
        raise InputError(f"--data {spec}: {exc}") from None


def compare(
    a: str | Path,
    b: str | Path,
    settings: AuditSettings | None = None,
    *,
    on_progress: ProgressCallback | None = None,
    **changes: Any,
) -> Comparison:
    """Audit ``a`` and ``b`` by the same settings on the same eval data (``data``, else the
    one A's meta.data names) and compare them."""
    s = AuditSettings.of(settings, changes)
    bundle_a, bundle_b = load(a, s), load(b, s)
    shared = s.data if is_function(s.data) else data_path_for(bundle_a, None if s.data is None else Path(s.data))
    if bundle_a.arch != bundle_b.arch:  # before B is run on A's eval data, which it may not even take
        raise different_networks(
            f"{printable(str(a))}: {printable(bundle_a.arch)}",
            f"{printable(str(b))}: {printable(bundle_b.arch)}",
            f", and both would be audited on A's eval data ({printable(str(shared))})",
        )
    s = replace(s, data=shared)
    return compare_reports(audit(bundle_a, s, on_progress=on_progress), audit(bundle_b, s, on_progress=on_progress))
