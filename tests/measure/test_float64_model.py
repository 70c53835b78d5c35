"""The float64 model of the first batch's work casts each weight as the forward reads it: its
numbers are those of a whole float64 copy, bit for bit, the user's model is left as it was,
and no float64 weight outlives the operation that used it (a 67 M-parameter model's float64
copy, 512 MiB, was the audit's peak memory)."""

from __future__ import annotations

import gc
import weakref
from dataclasses import replace

import pytest
import torch

from fa_audit.adapt import build_model, order_hidden
from fa_audit.adapt.fit_keys import fit_bundle
from fa_audit.loading import load_bundle, load_eval_data
from fa_audit.loss_heads import get_loss_head
from fa_audit.measure import float64_model
from fa_audit.measure.float64_model import in_float64
from fa_audit.measure.run import forward_backward
from model_adapters import AdaptedModel
from model_adapters.base import graph_free_copy

from ..conftest import SAMPLES

Tensor = torch.Tensor

CASES = [
    ("vit_mini_dfa.pt", "images_eval.safetensors", "cross_entropy"),  # attention: weights read through views
    ("small_cnn_dfa.pt", "images_eval.safetensors", "cross_entropy"),  # convolutions and their buffers
    ("gpt_mini_dfa.pt", "lm_eval.safetensors", "token_cross_entropy"),  # tied output, a cached causal mask
]


def _model_and_rows(checkpoint: str, data: str, head: str = "cross_entropy") -> tuple[AdaptedModel, Tensor, Tensor]:
    loaded = load_eval_data(SAMPLES / data, get_loss_head(head).targets)
    x, y = torch.as_tensor(loaded.x[:8]), torch.as_tensor(loaded.y[:8])
    x = x.float() if x.is_floating_point() else x.long()
    model = order_hidden(build_model(fit_bundle(load_bundle(SAMPLES / checkpoint))), x[:1])
    return model, x, y.long() if not y.is_floating_point() else y


def _as64(x: Tensor) -> Tensor:
    return x.double() if x.is_floating_point() else x


@pytest.mark.parametrize("keep", [True, False])
@pytest.mark.parametrize(("checkpoint", "data", "head"), CASES)
def test_its_numbers_are_a_whole_float64_copys(
    checkpoint: str, data: str, head: str, keep: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whether the casts are kept (a small model) or made on every read (a large one, each in
    pages of its own)."""
    monkeypatch.setattr(float64_model, "KEEP_BYTES", float64_model.KEEP_BYTES if keep else 0)
    monkeypatch.setattr(float64_model, "OWN_PAGES", float64_model.OWN_PAGES if keep else 0)
    model, x, y = _model_and_rows(checkpoint, data, head)
    copy = graph_free_copy(model.module).double().requires_grad_(True)
    for part in copy.modules():
        for name, value in list(vars(part).items()):
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                setattr(part, name, value.double())
    whole = replace(model, module=copy)
    loss = get_loss_head(head)
    logits, hidden, grads = forward_backward(in_float64(model), _as64(x), y, loss)
    logits_w, hidden_w, grads_w = forward_backward(whole, _as64(x), y, loss)
    assert logits.dtype == torch.float64 and torch.equal(logits, logits_w)
    assert all(torch.equal(a, b) for a, b in zip(hidden, hidden_w, strict=True))
    assert all(g.dtype == torch.float64 and torch.equal(a, b) for a, b, g in zip(grads, grads_w, grads, strict=True))


@pytest.mark.parametrize("keep", [True, False])
def test_the_users_model_is_only_read(keep: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(float64_model, "KEEP_BYTES", float64_model.KEEP_BYTES if keep else 0)
    model, x, y = _model_and_rows("small_cnn_dfa.pt", "images_eval.safetensors")
    model.module.requires_grad_(False)  # frozen: the float64 model must still put every h_l in the graph
    before = {name: (p, p._version, p.requires_grad, p.clone()) for name, p in model.module.named_parameters()}
    classes = [type(m) for m in model.module.modules()]
    _, _, grads = forward_backward(in_float64(model), x.double(), y)
    assert all(bool(g.abs().sum() > 0) for g in grads)
    after = dict(model.module.named_parameters())
    assert after.keys() == before.keys() and classes == [type(m) for m in model.module.modules()]
    for name, (p, version, requires, value) in before.items():
        assert after[name] is p and p.dtype == torch.float32 and p._version == version, name
        assert p.requires_grad == requires and p.grad is None and torch.equal(p, value), name


@pytest.mark.parametrize("own_pages", [True, False])
def test_no_float64_weight_outlives_its_operation(own_pages: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Above KEEP_BYTES, between the forward and the backward the graph holds the float32
    parameters only: every float64 cast is gone once the forward has returned, and the backward
    casts again; whether a cast is taken from the heap or has pages of its own (OWN_PAGES)."""
    model, x, _ = _model_and_rows("vit_mini_dfa.pt", "images_eval.safetensors")
    monkeypatch.setattr(float64_model, "KEEP_BYTES", 0)
    monkeypatch.setattr(float64_model, "OWN_PAGES", 0 if own_pages else float64_model.OWN_PAGES)
    casts: list[weakref.ref[torch.Tensor]] = []
    read = float64_model._Casts.read

    def recorded(self: float64_model._Casts, source: Tensor) -> Tensor:
        out = read(self, source)
        casts.append(weakref.ref(out))
        return out

    monkeypatch.setattr(float64_model._Casts, "read", recorded)
    model64 = in_float64(model)
    with torch.enable_grad():
        logits, hidden = model64.forward_hidden(x.double())
        gc.collect()
        weights = sum(p.numel() for p in model.module.parameters())
        assert len(casts) >= len(list(model.module.parameters())) and weights > 10_000
        assert [ref for ref in casts if ref() is not None] == []
        reads = len(casts)
        grads = torch.autograd.grad(logits.sum(), hidden)
    assert len(casts) == reads  # the backward's casts are the hooks', not the properties'
    assert all(g.dtype == torch.float64 and torch.isfinite(g).all() for g in grads)
    if own_pages:  # each mapping is reused once its cast is gone: a second pass maps nothing new
        reading = (vars(m)["_fa_audit_sources"][1] for m in model64.module.modules() if "_fa_audit_sources" in vars(m))
        pages = next(reading).pages
        mapped = {size: len(held) for size, held in pages.held.items()}
        forward_backward(model64, x.double(), torch.zeros(len(x), dtype=torch.long))
        assert {size: len(held) for size, held in pages.held.items()} == mapped
        assert max(mapped.values()) <= 2 < len(list(model.module.parameters()))


def test_a_forward_that_fails_leaves_no_hooks_behind() -> None:
    """The saved-tensor hooks are entered and left around the model's call, also when the
    user's forward raises: left on, they would repack every later autograd graph of the process."""
    model, x, _ = _model_and_rows("small_cnn_dfa.pt", "images_eval.safetensors")
    model64 = in_float64(model)
    with pytest.raises(RuntimeError):
        model64.module(torch.zeros(2, 5, dtype=torch.float64))
    assert torch._C._autograd._top_saved_tensors_default_hooks(False) is None
    model64.module(x.double())
    assert torch._C._autograd._top_saved_tensors_default_hooks(False) is None
