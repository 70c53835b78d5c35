"""The depth check's frozen-random-blocks baseline: a checkpoint of the audited architecture
whose deep blocks stay at their seeded initialisation, checked to be one, evaluated once per
eval file, and what the check reads of it (docs/measurements.md, "Depth utility")."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import torch

from ..adapt import build_model, fresh_model
from ..adapt.fit_keys import fit_bundle
from ..errors import InputError
from ..loading import Bundle, EvalData
from ..loss_heads import LossHead
from ..measure.scores import hits
from ..report import BaselineInfo

Tensor = torch.Tensor


def hits_of(
    bundle: Bundle,
    data: EvalData,
    batch_size: int,
    max_samples: int | None,
    device: torch.device,
    head: LossHead | None = None,
) -> Tensor:
    """Per eval sample, the checkpoint's score in the metric of ``head`` (:func:`~fa_audit.measure.scores.hits`)."""
    model = build_model(bundle)
    model.module.to(device)
    return hits(model, data, batch_size, max_samples, device, head)


FROZEN_BASELINE = (
    "a frozen-blocks baseline is the audited architecture, same arch_config, with its deep blocks left at their "
    "seeded random initialisation and only the interface (embedding, terminal norm, head) trained, saved with "
    "method 'frozen'"
)


@dataclass
class Baseline:
    """A frozen-blocks baseline, checked once and evaluated once per eval file however
    many checkpoints are audited against it."""

    bundle: Bundle
    _scores: dict[tuple[str, int | None, str, str], Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.bundle.method != "frozen":
            raise InputError(
                f"is not a frozen-random-blocks baseline (its method is {self.bundle.method!r}): {FROZEN_BASELINE}",
                self.bundle.path,
            )

    def hits(
        self, data: EvalData, batch_size: int, max_samples: int | None, device: torch.device, head: LossHead
    ) -> Tensor:
        """Per eval sample, the baseline's score in the metric of ``head``."""
        key = (str(data.path), max_samples, str(device), head.name)
        if key not in self._scores:
            self._scores[key] = hits_of(self.bundle, data, batch_size, max_samples, device, head)
        return self._scores[key]

    def deep_state(self) -> dict[str, Tensor]:
        model = build_model(self.bundle)
        return {k: v for k, v in self.bundle.state_dict.items() if model.is_deep(k)}

    def check_matches(self, audited: Bundle) -> None:
        """The same architecture as ``audited``, and deep blocks that are not its own."""
        base = self.bundle
        if (base.arch, base.arch_config) != (audited.arch, audited.arch_config):
            raise InputError(
                f"is not architecture-matched: {base.arch} {base.arch_config} vs the audited "
                f"{audited.arch} {audited.arch_config}; {FROZEN_BASELINE}",
                base.path,
            )
        deep = self.deep_state()
        if deep and all(torch.equal(v, audited.state_dict[k]) for k, v in deep.items()):
            raise InputError(
                "has the same deep blocks as the audited checkpoint, so it cannot be its baseline; " + FROZEN_BASELINE,
                base.path,
            )

    @cached_property
    def deep_blocks_at_init(self) -> bool | None:
        """Whether the deep blocks equal the adapter's initialisation under ``meta.seed``."""
        seed = self.bundle.meta.get("seed")
        if not isinstance(seed, int) or isinstance(seed, bool):
            return None
        fresh = fresh_model(self.bundle, seed=seed).module.state_dict()
        return all(torch.equal(v.to(fresh[k].dtype), fresh[k]) for k, v in self.deep_state().items())

    def info(self, found: Tensor) -> BaselineInfo:
        path = None if self.bundle.path is None else str(self.bundle.path)
        return BaselineInfo("checkpoint", float(found.double().mean()), path, self.deep_blocks_at_init, hits=found)


def baseline_info(
    bundle: Bundle,
    baseline: Bundle | Baseline | BaselineInfo | None,
    supplied: float | None,
    evaluate: Callable[[Baseline], Tensor],
    metric: str = "accuracy",
) -> BaselineInfo | None:
    if baseline is not None and supplied is not None:
        raise InputError("give one of --baseline, --baseline-accuracy and --fit-baseline")
    if isinstance(baseline, BaselineInfo):  # fitted by the tool
        return baseline
    if supplied is not None:
        if metric == "loss" and not 0.0 <= supplied < math.inf:
            raise InputError(
                f"--baseline-accuracy (for this loss head, the baseline's mean loss) must be a finite number >= 0, "
                f"not {supplied!r}"
            )
        if metric != "loss" and not 0.0 <= supplied <= 1.0:
            raise InputError(f"--baseline-accuracy must be a fraction between 0 and 1, not {supplied!r}")
        return BaselineInfo("supplied", supplied)
    if baseline is None:
        return None
    base = baseline if isinstance(baseline, Baseline) else Baseline(fit_bundle(baseline))
    base.check_matches(bundle)
    return base.info(evaluate(base))
