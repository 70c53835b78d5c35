"""``--fit-baseline``: the matched frozen-random-blocks baseline, fitted by the tool. The
architecture at its seeded initialisation, deep blocks frozen (BatchNorm statistics
included), the interface (embedding, terminal norm, head) trained with AdamW on the train
data, then evaluated on the eval data. The fitted interface weights are cached on disk
(:mod:`fa_audit.checks.baseline_cache`), keyed by everything that determines them, so re-auditing
costs one evaluation pass."""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from model_adapters import AdaptedModel

from .. import __version__
from ..adapt import fresh_model, probe
from ..config import BaselineBudget
from ..errors import InputError
from ..escape import printable
from ..loading import Bundle, EvalData
from ..loading.files import sha256
from ..loss_heads import LossHead
from ..loss_heads.cross_entropy import CROSS_ENTROPY
from ..measure.scores import hits
from ..report import BaselineInfo
from .baseline_cache import Entry, lookup, store

Progress = Callable[[int, int], None]


BUDGET_KEYS = ("epochs", "lr", "weight_decay", "batch_size")


def budget_note(bundle: Bundle) -> str | None:
    """The baseline trains with fa-audit's budget (depth_utility.baseline in --config), never the
    audited file's: ``meta.epochs: 0`` would leave it untrained, ``999999`` run for ever."""
    named = [key for key in BUDGET_KEYS if key in bundle.meta]
    if not named:
        return None
    return (
        f"the checkpoint's meta names training settings ({', '.join(named)}), which the fitted baseline does not "
        "take: it trains with depth_utility.baseline from --config, so that the file it judges cannot set it"
    )


def _key(bundle: Bundle, seed: int, train: str, budget: BaselineBudget, head: LossHead) -> str:
    """Everything the fitted weights depend on (the eval data does not: it only evaluates them);
    the loss head only when it is not cross-entropy, so that entries fitted before heads existed stay valid."""
    record = {
        "arch": bundle.arch, "code": _code_digest(bundle.arch), "arch_config": bundle.arch_config,
        "hidden": bundle.options.hidden, "deep": bundle.options.deep, "seed": seed, "train": train,
        "budget": asdict(budget), "fa_audit": __version__, "torch": torch.__version__,
    }  # fmt: skip
    if head is not CROSS_ENTROPY:
        record["loss"] = head.name
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


def _code_digest(arch: str) -> str | None:
    """The SHA-256 of the file that defines a ``module:`` architecture: a changed model file
    is another architecture (built-in adapters change with the fa-audit version)."""
    if not arch.startswith("module:"):
        return None
    module = sys.modules.get(arch.split(":")[1])
    source = None if module is None else getattr(module, "__file__", None)
    if source is None or not Path(source).is_file():
        return None
    return sha256(Path(source))


@dataclass(frozen=True)
class Fitted:
    """A fitted baseline, the cache entry it was read from with its SHA-256, and a note when
    the cache could not be used."""

    info: BaselineInfo
    read: tuple[Path, str] | None
    note: str | None


def fit_baseline(
    bundle: Bundle,
    train: EvalData,
    evaluation: EvalData,
    *,
    train_sha: str,
    budget: BaselineBudget,
    seed: int,
    device: torch.device,
    max_samples: int | None,
    cache: Path | None,
    on_progress: Progress | None = None,
    head: LossHead = CROSS_ENTROPY,
) -> Fitted:
    """The fitted baseline's eval accuracy; ``cache`` None bypasses the cache. A cached fit's
    interface weights are loaded into the seeded architecture and evaluated here."""
    model = fresh_model(bundle, seed=seed)
    net = model.module.float().to(device)
    _check_frozen_split(bundle.arch, model)
    key = _key(bundle, seed, train_sha, budget, head)
    entry = None if cache is None else cache / f"{key}.safetensors"
    found = Entry(None) if entry is None else lookup(entry, _interface(model), key)
    if entry is not None and found.weights is not None and found.sha256 is not None:
        net.load_state_dict(found.weights, strict=False)
        net.eval()
        return Fitted(
            _evaluated("cache", model, evaluation, max_samples, device, entry, head), (entry, found.sha256), found.note
        )
    _train(model, train, budget, seed, device, on_progress, head)
    note = found.note
    if entry is not None:
        note = store(entry, _interface(model), key) or note
    return Fitted(_evaluated("fitted", model, evaluation, max_samples, device, entry, head), None, note)


def _evaluated(
    source: str,
    model: AdaptedModel,
    evaluation: EvalData,
    max_samples: int | None,
    device: torch.device,
    entry: Path | None,
    head: LossHead,
) -> BaselineInfo:
    found = hits(model, evaluation, 256, max_samples, device, head)
    path = None if entry is None else str(entry)
    return BaselineInfo(source, float(found.double().mean()), path, True, hits=found)


def _interface(model: AdaptedModel) -> dict[str, torch.Tensor]:
    """The state a fit trains (and the cache holds): every entry outside the deep blocks."""
    return {k: v for k, v in model.module.state_dict().items() if not model.is_deep(k)}


def _check_frozen_split(arch: str, model: AdaptedModel) -> None:
    """A frozen-blocks baseline needs blocks to freeze and an interface to train."""
    names = [name for name, _ in model.module.named_parameters()]
    deep = [name for name in names if model.is_deep(name)]
    if not deep:
        raise InputError(f"{arch} names no deep blocks to freeze, so no frozen-blocks baseline can be fitted")
    if len(deep) == len(names):
        raise InputError(
            f"the deep blocks of {printable(arch)} hold every parameter, so a frozen-blocks baseline would have "
            "nothing to train; --deep should name the blocks between the interface layers"
        )


def _train(
    model: AdaptedModel,
    train: EvalData,
    budget: BaselineBudget,
    seed: int,
    device: torch.device,
    on_progress: Progress | None,
    head: LossHead,
) -> None:
    """The interface trained with AdamW, the deep blocks frozen (BatchNorm statistics too)."""
    net = model.module
    classes = probe(model, train.first().to(device), train.path, head).classes
    deep = {name for name, _ in net.named_parameters() if model.is_deep(name)}
    params = [p for name, p in net.named_parameters() if name not in deep]
    for name, p in net.named_parameters():
        p.requires_grad_(name not in deep)
    optimizer = torch.optim.AdamW(params, lr=budget.lr, weight_decay=budget.weight_decay)
    x_all, y_all = _tensors(train, head, classes)
    generator = torch.Generator().manual_seed(seed)
    steps, done = budget.epochs * -(-len(y_all) // budget.batch_size), 0
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for _ in range(budget.epochs):
            order = torch.randperm(len(y_all), generator=generator)
            for idx in torch.split(order, budget.batch_size):
                net.train()
                for name, module in net.named_modules():  # frozen blocks keep their statistics too
                    if name and model.is_deep(f"{name}."):
                        module.eval()
                optimizer.zero_grad()
                logits, _ = model.forward_hidden(x_all[idx].to(device))
                loss = head.training_loss(logits, y_all[idx].to(device))
                torch.autograd.backward(loss)
                optimizer.step()
                done += 1
                if on_progress is not None:
                    on_progress(done, steps)
    net.eval()


def _tensors(data: EvalData, head: LossHead, outputs: int) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*data.batches(4096, head, outputs), strict=True)
    return torch.cat(xs), torch.cat(ys)
