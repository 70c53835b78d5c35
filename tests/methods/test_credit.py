"""Credit signals against hand-derived formulas (docs/measurements.md)."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import replace
from types import SimpleNamespace
from typing import cast

import pytest
import torch
from torch.nn import functional as F

from fa_audit.measure.run import bp_pass, complete_feedback, forward_backward
from fa_audit.methods import Batch, Probe, get_method
from model_adapters import AdaptedModel, get_adapter

GEN = torch.Generator().manual_seed(0)


def _batch(model: AdaptedModel, x: torch.Tensor, y: torch.Tensor) -> Batch:
    logits, _, grads = forward_backward(model, x, y)
    error = logits.softmax(-1) - F.one_hot(y, logits.shape[-1]).double()
    return Batch(x=x, y=y, error=error, grads=grads)


def _two_layer_mlp() -> tuple[AdaptedModel, torch.Tensor, torch.Tensor]:
    model = get_adapter("mlp").build({"in_dim": 5, "width": 6, "depth": 2, "num_classes": 3}, seed=0)
    x = torch.randn(7, 5, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    return model, x, y


def _fa_feedback(model: AdaptedModel) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    return {
        n: torch.randn(m.weight.shape, generator=g)
        for n, m in model.module.named_modules()
        if isinstance(m, torch.nn.Linear)
    }


def test_fa_credit_equals_the_hand_derived_backward_pass() -> None:
    model, x, y = _two_layer_mlp()
    b = _fa_feedback(model)
    batch = _batch(model, x, y)
    credit = get_method("fa").credit(model, batch, {k: v.unsqueeze(0) for k, v in b.items()}, GEN)
    with torch.no_grad():
        _, (_, h1) = model.forward_hidden(x)
    c1 = batch.error.float() @ b["head"]  # d/dh1 with W_head replaced by B_head
    c0 = (c1 * (1 - h1**2)) @ b["layers.1"]  # through tanh' (true), then B of layers.1
    assert torch.allclose(credit[1][0].float(), c1, atol=1e-6)
    assert torch.allclose(credit[0][0].float(), c0, atol=1e-6)


def test_fa_with_true_weights_as_feedback_is_backprop() -> None:
    model, x, y = _two_layer_mlp()
    weights = {
        n: m.weight.detach().clone().unsqueeze(0)
        for n, m in model.module.named_modules()
        if isinstance(m, torch.nn.Linear)
    }
    batch = _batch(model, x, y)
    credit = get_method("fa").credit(model, batch, weights, GEN)
    for c, g in zip(credit, batch.grads, strict=True):
        assert torch.allclose(c[0].double(), g, atol=1e-6)


def test_fa_draws_in_one_batched_pass_equal_one_pass_per_draw() -> None:
    model, x, y = _two_layer_mlp()
    draws = [_fa_feedback(model) for _ in range(3)]
    batch = _batch(model, x, y)
    method = get_method("fa")
    stacked = {k: torch.stack([d[k] for d in draws]) for k in draws[0]}
    together = method.credit(model, batch, stacked, GEN)
    for i, d in enumerate(draws):
        alone = method.credit(model, batch, {k: v.unsqueeze(0) for k, v in d.items()}, GEN)
        for t, a in zip(together, alone, strict=True):
            assert torch.allclose(t[i], a[0], atol=1e-6)


def test_fa_missing_feedback_poisons_exactly_the_layers_that_need_it() -> None:
    model, x, y = _two_layer_mlp()
    b = _fa_feedback(model)
    method = get_method("fa")
    shapes = method.feedback_shapes(model, Probe(classes=3, widths=(6, 6)))
    batch = _batch(model, x, y)
    # layers.0's B is never used: no hidden state lies below it.
    no_first = complete_feedback({k: v for k, v in b.items() if k != "layers.0"}, shapes)
    credit = method.credit(model, batch, {k: v.unsqueeze(0) for k, v in no_first.tensors.items()}, GEN)
    assert not any(c is not None and c.isnan().any() for c in credit)
    # layers.1's B lies between h1 and h0: only h0 is affected.
    no_second = complete_feedback({k: v for k, v in b.items() if k != "layers.1"}, shapes)
    credit = method.credit(model, batch, {k: v.unsqueeze(0) for k, v in no_second.tensors.items()}, GEN)
    assert credit[0] is not None and credit[0].isnan().all()
    assert credit[1] is not None and not credit[1].isnan().any()


def test_dfa_credit_is_error_times_feedback() -> None:
    model = get_adapter("resmlp").build({"in_dim": 4, "width": 8, "depth": 2, "num_classes": 3}, seed=0)
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(3))
    y = torch.tensor([0, 1, 2, 1, 0])
    b = {
        name: torch.randn(3, 8, generator=torch.Generator().manual_seed(i))
        for i, name in enumerate(model.hidden_modules)
    }
    batch = _batch(model, x, y)
    credit = get_method("dfa").credit(model, batch, {k: v.unsqueeze(0) for k, v in b.items()}, GEN)
    for c, name in zip(credit, model.hidden_modules, strict=True):
        assert c is not None
        assert torch.allclose(c[0], batch.error @ b[name].double())


def test_dfa_factored_alignment_terms_equal_those_of_the_materialised_credit() -> None:
    model = get_adapter("resmlp").build({"in_dim": 4, "width": 8, "depth": 2, "num_classes": 3}, seed=0)
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(3))
    batch = _batch(model, x, torch.tensor([0, 1, 2, 1, 0, 2]))
    draws = {
        name: torch.randn(4, 3, 8, generator=torch.Generator().manual_seed(i))
        for i, name in enumerate(model.hidden_modules)
    }
    targets = [g.flatten(1).double() for g in batch.grads]
    factored = get_method("dfa").alignment_terms(model, batch, draws, GEN, targets)
    for terms, name, g in zip(factored, model.hidden_modules, targets, strict=True):
        c = torch.einsum("nc,kcw->knw", batch.error.double(), draws[name].double())  # float64 e·B_k
        assert terms is not None and terms[0].shape == (4, 6)
        assert torch.allclose(terms[0], (c * g).sum(-1), rtol=1e-12, atol=1e-15)
        assert torch.allclose(terms[1], (c * c).sum(-1), rtol=1e-12, atol=1e-15)


def test_bp_credit_is_the_gradient() -> None:
    model, x, y = _two_layer_mlp()
    batch = _batch(model, x, y)
    credit = get_method("bp").credit(model, batch, {}, GEN)
    for c, g in zip(credit, batch.grads, strict=True):
        assert c is not None and torch.equal(c[0], g)


def test_null_draws_keep_shape_and_std_of_the_persisted_matrix() -> None:
    b = {"embed": torch.randn(10, 64, generator=torch.Generator().manual_seed(4)) * 3.0}
    draws = get_method("dfa").draw_null_feedback(b, 20, torch.Generator().manual_seed(5))
    assert draws["embed"].shape == (20, 10, 64)
    assert abs(float(draws["embed"].std()) - float(b["embed"].std())) < 0.1


def test_fa_walks_the_bp_pass_own_graph_and_leaves_its_gradient_bit_for_bit() -> None:
    """One forward for the BP gradient and the FA credit: the gradient is autograd's, exactly."""
    model, x, y = _two_layer_mlp()
    method = get_method("fa")
    feedback = {k: v.unsqueeze(0) for k, v in _fa_feedback(model).items()}
    _, _, grads, error, _, forward = bp_pass(model, x, y, method.instrument(model))[:6]
    plain = bp_pass(model, x, y, nullcontext()).grads
    assert forward is not None and all(torch.equal(g, p) for g, p in zip(grads, plain, strict=True))
    shared = method.credit(model, Batch(x=x, y=y, error=error, grads=grads, forward=forward), feedback, GEN)
    own = method.credit(model, Batch(x=x, y=y, error=error, grads=grads), feedback, GEN)
    assert all(s is not None and o is not None and torch.equal(s, o) for s, o in zip(shared, own, strict=True))


@pytest.mark.parametrize("keep", [3, 7, 256])
def test_fas_first_batch_terms_are_the_passs_and_keep_the_walks_own_credit(keep: int) -> None:
    """The first batch's one walk gives the pass its terms, bit for bit, and the diagnostics the
    credit of its first ``keep`` rows, a copy where the batch has more (not a view of every row)."""
    model, x, y = _two_layer_mlp()
    method = get_method("fa")
    feedback = {k: v.unsqueeze(0) for k, v in _fa_feedback(model).items()}

    def walked() -> tuple[Batch, list[torch.Tensor]]:
        _, _, grads, error, _, forward = bp_pass(model, x, y, method.instrument(model))[:6]
        return Batch(x=x, y=y, error=error, grads=grads, forward=forward), [g.flatten(1) for g in grads]

    batch, targets = walked()
    terms, kept = method.first_terms(model, batch, feedback, GEN, targets, keep)
    batch, targets = walked()
    want = method.alignment_terms(model, batch, feedback, GEN, targets)
    own = method.credit(model, replace(batch, forward=None), feedback, GEN)
    assert kept is not None and len(terms) == len(want) == len(kept) == 2
    for (dot, square), expected, c, full in zip(terms, want, kept, own, strict=True):
        assert expected is not None and torch.equal(dot, expected[0]) and torch.equal(square, expected[1])
        assert c is not None and full is not None and torch.equal(c, full[:, :keep])
        assert c.untyped_storage().nbytes() == c.numel() * c.element_size()


def test_a_method_without_a_walk_leaves_the_diagnostics_their_own_credit() -> None:
    model, x, y = _two_layer_mlp()
    method = get_method("dfa")
    batch = _batch(model, x, y)
    feedback = {name: torch.randn(1, 3, 6, generator=torch.Generator().manual_seed(3)) for name in model.hidden_modules}
    targets = [g.flatten(1) for g in batch.grads]
    terms, kept = method.first_terms(model, batch, feedback, GEN, targets, 256)
    want = method.alignment_terms(model, batch, feedback, GEN, targets)
    assert kept is None
    for t, w in zip(terms, want, strict=True):
        assert t is not None and w is not None and all(map(torch.equal, t, w))


def test_methods_without_a_walk_keep_no_graph() -> None:
    model, x, y = _two_layer_mlp()
    assert bp_pass(model, x, y, get_method("dfa").instrument(model)).forward is None


def test_per_token_dfa_terms_in_float32_are_float64s_within_float32s_rounding() -> None:
    """<c, g> and |c|² summed over each sequence's tokens, for the persisted B (by position) and
    for K draws (through the sequences' [V, V] sums, and by position past GRAM_VOCAB), against
    the per-token credit formed in float64: float32 products move them by float32's ~1e-7."""
    import fa_audit.methods.dfa as dfa_module

    two = cast(AdaptedModel, SimpleNamespace(hidden_modules=["a", "b"]))
    gen = torch.Generator().manual_seed(0)
    n, t, vocab, width = 40, 8, 50, 12
    e = torch.randn(n, t, vocab, dtype=torch.float64, generator=gen).softmax(-1)
    g = [torch.randn(n, t * width, dtype=torch.float64, generator=gen) for _ in range(2)]
    method = dfa_module.DirectFeedbackAlignment()
    for draws in (1, 5):
        feedback = {k: torch.randn(draws, vocab, width, generator=gen) for k in ("a", "b")}
        found = [method._token_terms(two, e, feedback, g, [0, 1])]
        limit = dfa_module.GRAM_VOCAB
        try:
            dfa_module.GRAM_VOCAB = vocab - 1  # the K draws one position at a time
            found.append(method._token_terms(two, e, feedback, g, [0, 1]))
        finally:
            dfa_module.GRAM_VOCAB = limit
        for i, name in enumerate(("a", "b")):
            c = torch.einsum("ntv,kvd->kntd", e, feedback[name].double())
            dot, square = (c * g[i].view(n, t, width)).sum((2, 3)), (c * c).sum((2, 3))
            for terms in found:
                assert terms[i] is not None
                assert ((terms[i][0] - dot).abs() / dot.abs().max()).max() < 3e-6
                assert ((terms[i][1] - square) / square).abs().max() < 3e-6
