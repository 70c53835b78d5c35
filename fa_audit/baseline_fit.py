"""``--fit-baseline``: the matched frozen-random-blocks baseline, fitted by the tool. The
architecture at its seeded initialisation, deep blocks frozen (BatchNorm statistics
included), the interface (embedding, terminal norm, head) trained with AdamW on the train
data, then evaluated on the eval data. The accuracy is cached on disk, keyed by
everything that determines it, so re-auditing is instant."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
from torch.nn import functional as F

from . import __version__
from .adapt import accuracy, fresh_model, probe
from .config import BaselineBudget
from .errors import InputError
from .loading import Bundle, EvalData
from .report import BaselineInfo

Progress = Callable[[int, int], None]


def cache_dir(given: Path | None) -> Path:
    """``--cache-dir``, else ``$FA_AUDIT_CACHE``, else the user cache directory."""
    if given is not None:
        return given
    if os.environ.get("FA_AUDIT_CACHE"):
        return Path(os.environ["FA_AUDIT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fa-audit" / "baselines"


def budget_for(bundle: Bundle, budget: BaselineBudget) -> BaselineBudget:
    """The checkpoint's own training settings in ``meta`` (epochs, lr, weight_decay,
    batch_size) win over the configured budget, so the baseline trains as the run did."""
    overrides = {}
    for key, kind in (("epochs", int), ("lr", float), ("weight_decay", float), ("batch_size", int)):
        value = bundle.meta.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < 1e6:
            overrides[key] = kind(value)
    return BaselineBudget(**{**asdict(budget), **overrides})


def _key(
    bundle: Bundle, seed: int, train: str, evaluation: str, budget: BaselineBudget, max_samples: int | None
) -> str:
    record = {
        "arch": bundle.arch, "arch_config": bundle.arch_config, "hidden": bundle.hidden, "deep": bundle.deep,
        "seed": seed, "train": train, "eval": evaluation, "budget": asdict(budget), "max_samples": max_samples,
        "fa_audit": __version__, "torch": torch.__version__,
    }  # fmt: skip
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


def fit_baseline(
    bundle: Bundle,
    train: EvalData,
    evaluation: EvalData,
    *,
    train_sha: str,
    eval_sha: str,
    budget: BaselineBudget,
    seed: int,
    device: torch.device,
    max_samples: int | None,
    cache: Path | None,
    on_progress: Progress | None = None,
) -> BaselineInfo:
    """The fitted baseline's eval accuracy; ``cache`` None bypasses the cache."""
    budget = budget_for(bundle, budget)
    key = _key(bundle, seed, train_sha, eval_sha, budget, max_samples)
    entry = None if cache is None else cache / f"{key}.json"
    if entry is not None and entry.is_file():
        try:
            accuracy = float(json.loads(entry.read_text())["accuracy"])
            if 0.0 <= accuracy <= 1.0:
                return BaselineInfo("cache", accuracy, str(entry), True)
        except (ValueError, KeyError, TypeError, OSError):
            pass  # a damaged entry is refitted and rewritten
    accuracy = _train_and_evaluate(bundle, train, evaluation, budget, seed, device, max_samples, on_progress)
    if entry is not None:
        _store(entry, {"accuracy": accuracy, "budget": asdict(budget), "seed": seed, "arch": bundle.arch})
    return BaselineInfo("fitted", accuracy, None if entry is None else str(entry), True)


def _train_and_evaluate(
    bundle: Bundle,
    train: EvalData,
    evaluation: EvalData,
    budget: BaselineBudget,
    seed: int,
    device: torch.device,
    max_samples: int | None,
    on_progress: Progress | None,
) -> float:
    model = fresh_model(bundle, seed=seed)
    net = model.module.float().to(device)
    classes = probe(model, train.first().to(device), train.path).classes
    deep = {name for name, _ in net.named_parameters() if model.is_deep(name)}
    if not deep:
        raise InputError(f"{bundle.arch} names no deep blocks to freeze, so no frozen-blocks baseline can be fitted")
    params = [p for name, p in net.named_parameters() if name not in deep]
    for name, p in net.named_parameters():
        p.requires_grad_(name not in deep)
    optimizer = torch.optim.AdamW(params, lr=budget.lr, weight_decay=budget.weight_decay)
    x_all, y_all = _tensors(train, classes)
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
                loss = F.cross_entropy(logits, y_all[idx].to(device))
                torch.autograd.backward(loss)
                optimizer.step()
                done += 1
                if on_progress is not None:
                    on_progress(done, steps)
    net.eval()
    return accuracy(model, evaluation, 256, max_samples, device)


def _tensors(data: EvalData, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*data.batches(4096, classes), strict=True)
    return torch.cat(xs), torch.cat(ys)


def _store(entry: Path, record: dict[str, object]) -> None:
    """Written atomically; a cache that cannot be written only costs a refit next time."""
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = entry.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record))
        tmp.replace(entry)
    except OSError:
        pass
