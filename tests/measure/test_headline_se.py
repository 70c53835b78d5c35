"""The headline Γ (the mean over layers of Γ_l) and deep Γ (over h1..hL) with their standard errors over
the eval samples, against an independent float64 computation: each sample's DFA cosines e · B_l against
g_l, averaged over the layers, their standard deviation over √n."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from fa_audit.adapt import build_model
from fa_audit.adapt.fit_keys import fit_bundle
from fa_audit.api import data_path_for
from fa_audit.loading import load_bundle, load_eval_data
from fa_audit.measure.accumulate import AggregationSums
from fa_audit.measure.run import forward_backward
from fa_audit.report import AuditReport

from ..conftest import SAMPLES


@pytest.mark.parametrize("name", ["dfa", "dfa_penalty"])
def test_the_headlines_error_is_that_of_the_samples_layer_means(name: str, audited: Callable[..., AuditReport]) -> None:
    report = audited(name)
    bundle = fit_bundle(load_bundle(SAMPLES / f"{name}.pt"))
    model = build_model(bundle)
    data = load_eval_data(data_path_for(bundle, None), "labels")
    per_layer = []
    for start in range(0, data.samples, 1024):
        x = torch.as_tensor(data.x[start : start + 1024]).float()
        y = torch.as_tensor(data.y[start : start + 1024]).long()
        logits, _, grads = forward_backward(model, x, y)
        error = torch.softmax(logits.double(), -1) - torch.nn.functional.one_hot(y, logits.shape[-1]).double()
        rows = []
        for module, g in zip(model.hidden_modules, grads, strict=True):
            c, g64 = error @ bundle.feedback[module].double(), g.flatten(1).double()
            rows.append((c * g64).sum(1) / (c.norm(dim=1) * g64.norm(dim=1)))
        per_layer.append(torch.stack(rows))
    cos = torch.cat(per_layer, 1)  # [L, N]
    layer_means = cos.mean(0)
    aggregate = report.measurements.aggregate
    assert aggregate.headline == pytest.approx(float(cos.mean()), abs=1e-6)
    expected = float(layer_means.std() / math.sqrt(cos.shape[1]))
    assert aggregate.headline_se == pytest.approx(expected, rel=1e-4)
    # at most what perfectly correlated layers would give: the mean of their errors
    layers = report.measurements.layers
    assert aggregate.headline_se <= sum(layer.cos_se or 0.0 for layer in layers) / len(layers) + 1e-12
    assert report.to_dict()["aggregate"]["headline_se"] == aggregate.headline_se
    assert report.scalars()["fa_audit/aggregate_se"] == aggregate.headline_se
    deep_means = cos[1:].mean(0)
    assert aggregate.deep_se == pytest.approx(float(deep_means.std() / math.sqrt(cos.shape[1])), rel=1e-4)
    assert report.to_dict()["aggregate"]["deep_se"] == aggregate.deep_se
    assert aggregate.deep == pytest.approx(float(cos[1:].mean()), abs=1e-6)
    assert report.scalars()["fa_audit/deep"] == aggregate.deep
    assert report.scalars()["fa_audit/deep_se"] == aggregate.deep_se


def test_the_sums_add_over_batches_and_ranks() -> None:
    generator = torch.Generator().manual_seed(0)
    dot, cc, gg = (torch.rand(3, 50, generator=generator, dtype=torch.float64) + 0.1 for _ in range(3))
    whole, parts = AggregationSums(3), [AggregationSums(3), AggregationSums(3)]
    whole.add_batch(dot, cc, gg, deep=2)
    parts[0].add_batch(dot[:, :20], cc[:, :20], gg[:, :20], deep=2)
    parts[1].add_batch(dot[:, 20:], cc[:, 20:], gg[:, 20:], deep=2)
    merged = AggregationSums.merged(parts)
    each = dot / (cc * gg).sqrt()
    assert merged.headline_se() == pytest.approx(whole.headline_se(), rel=1e-12)
    assert whole.headline_se() == pytest.approx(float(each.mean(0).std() / math.sqrt(50)), rel=1e-12)
    assert merged.deep_se() == pytest.approx(whole.deep_se(), rel=1e-12)
    assert whole.deep_se() == pytest.approx(float(each[1:].mean(0).std() / math.sqrt(50)), rel=1e-12)
    assert AggregationSums(3).headline_se() is None and AggregationSums(3).deep_se() is None
