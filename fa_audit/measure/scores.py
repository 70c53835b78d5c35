"""Each eval sample's score in the loss head's metric, for a whole eval set: what a metric and
a paired comparison of two models (the depth check's margin) are made of."""

from __future__ import annotations

import torch

from model_adapters import AdaptedModel
from model_adapters.base import InputShapeError

from ..adapt import batch_refused, probe
from ..loading import EvalData
from ..loss_heads import DEFAULT as DEFAULT_LOSS
from ..loss_heads import LossHead, get_loss_head
from .precision import ieee_float32

Tensor = torch.Tensor


def hits(
    model: AdaptedModel,
    data: EvalData,
    batch_size: int,
    max_samples: int | None,
    device: torch.device,
    head: LossHead | None = None,
) -> Tensor:
    """Per eval sample, in order, the metric's score of ``model`` (already on ``device``, in eval
    mode): whether its top class is the label (cross-entropy), else its loss; the metric is
    their mean, and a paired comparison pairs them."""
    head = head or get_loss_head(DEFAULT_LOSS)
    classes = probe(model, data.first().to(device), data.path, head).classes
    found: list[Tensor] = []
    with torch.inference_mode(), ieee_float32():
        for x, y in data.batches(batch_size, head, classes, max_samples):
            try:
                logits, _ = model.forward_hidden(x.to(device))
            except InputShapeError as exc:
                raise batch_refused(model, exc, len(y), sum(map(len, found)), data.path) from None
            found.append(head.scores(logits, y.to(device)).cpu())
    return torch.cat(found)
