from __future__ import annotations

from dataclasses import replace

import torch

from model_adapters import AdaptedModel

from .base import Batch, CreditMethod, Feedback, Probe, Tensor, Terms

SEQUENCE_CHUNK = 32
"""Sequences whose per-position sums are formed at once (a [32, V, width] tensor)."""
GRAM_VOCAB = 1024
"""Up to this vocabulary, |c|² goes through each sequence's [V, V] sum of e_tᵀ e_t."""


class DirectFeedbackAlignment(CreditMethod):
    """c_l = e · B_l, one matrix [classes, width] per module output."""

    name = "dfa"
    description = "direct feedback alignment; c_l = e · B_l, B keyed by module (embed, blocks.0, ...)"
    needs_feedback = True
    feedback_kind = "hidden"

    def signal(self, batch: Batch) -> Tensor:
        """What B projects: the output error e = softmax - onehot(y) (its direction ê: see Batch.error),
        or the gradient at the model's error point where its DFA sits before the output layer."""
        return batch.error if batch.projected is None else batch.projected

    def null_signal(self, batch: Batch) -> Tensor | None:
        """The signal B projects, per sample; per token, a sequence's credit is not one row times B."""
        signal = self.signal(batch)
        return signal if signal.dim() == 2 else None

    def credit_factors(
        self, model: AdaptedModel, batch: Batch, feedback: Feedback
    ) -> list[tuple[Tensor, Tensor]] | None:
        signal = self.null_signal(batch)
        return None if signal is None else [(signal, feedback[name][0]) for name in model.hidden_modules]

    def feedback_shapes(self, model: AdaptedModel, probe: Probe) -> dict[str, tuple[int, ...]]:
        """[classes, width]; per token ([vocabulary, one position's width]) for a per-token output,
        one matrix shared by every position, as TinyDFA's ``batch_dims=(0, 1)`` shares it; the error
        point's width in place of the classes where the model has one."""
        tokens, rows = probe.tokens or 1, probe.projected or probe.classes
        return {name: (rows, probe.widths[i] // tokens) for i, name in enumerate(model.hidden_modules)}

    def layer_keys(self, model: AdaptedModel, layer: int) -> set[str] | None:
        return {model.hidden_modules[layer]}

    def credit(
        self, model: AdaptedModel, batch: Batch, feedback: Feedback, generator: torch.Generator
    ) -> list[Tensor | None]:
        signal = self.signal(batch).double()
        if signal.dim() == 3:  # per token: each position's error through the one matrix
            return [
                torch.einsum("ntv,kvd->kntd", signal, feedback[name].double()).flatten(2)
                for name in model.hidden_modules
            ]
        return [torch.einsum("nc,kcw->knw", signal, feedback[name].double()) for name in model.hidden_modules]

    def alignment_terms(
        self, model: AdaptedModel, batch: Batch, feedback: Feedback, generator: torch.Generator, targets: list[Tensor]
    ) -> Terms:
        """<e B_k, g> = e . (B_k g) and |e B_k|^2 = e (B_k B_k^T) e^T: products with the
        [classes]-sized side only, so the [K, n, width] credit is never built; only the layers
        the batch wants (:attr:`Batch.layers`)."""
        signal = self.signal(batch).double()
        if signal.dim() == 3:
            return self._token_terms(model, signal, feedback, targets, batch.wanted())
        e_t = signal.T  # [classes, n]
        terms: list[tuple[Tensor, Tensor] | None] = []
        wanted = set(batch.wanted())
        for i, (name, g) in enumerate(zip(model.hidden_modules, targets, strict=True)):
            if i not in wanted:
                terms.append(None)
                continue
            b = feedback[name].double()  # [K, classes, width]
            dot = ((b @ g.T) * e_t).sum(1)
            gram = b @ b.transpose(1, 2)
            terms.append((dot, ((gram @ e_t) * e_t).sum(1)))
        return terms

    def _token_terms(
        self, model: AdaptedModel, e: Tensor, feedback: Feedback, targets: list[Tensor], present: list[int]
    ) -> Terms:
        """The same per token, summed over a sequence's positions: <c, g> = Σ_t (e_t B) · g_t and
        |c|² = Σ_t |e_t B|². One draw (the persisted B) goes position by position, [N·T, width];
        K null draws go through each sequence's sums over its positions, which every draw then
        only contracts: <B, Σ_t e_tᵀ g_t> and <B Bᵀ, Σ_t e_tᵀ e_t> (the latter formed once for
        every layer, up to a vocabulary of GRAM_VOCAB): K·V·(D + V) per sequence, not K·T·V·D.

        Both are float32 products, summed per sequence in float64. ê's largest entry in a sequence
        is 1 (:mod:`fa_audit.measure.loss_head`), so what float32 flushes to 0 lies below 1e-38 of
        it and no direction is lost; each token's product is within float32's relative 1e-6 of
        |e_t B| |g_t|, so by Cauchy–Schwarz a sequence's cosine moves by at most ~1e-6, the rounding
        of the float32 gradient itself (a language model's per-token products in float64 were a
        fifth of its audit)."""
        n, t, vocab = e.shape
        terms: list[tuple[Tensor, Tensor] | None] = [None] * len(targets)
        draws = feedback[model.hidden_modules[present[0]]].shape[0] if present else 0
        if draws == 1 or vocab > GRAM_VOCAB:
            tokens = e.reshape(n * t, vocab).float()
            for i in present:
                terms[i] = self._by_position(tokens, n, feedback[model.hidden_modules[i]].float(), targets[i])
            return terms
        # As matrix products on flattened operands: einsum copied each draw's [K, V, D] per chunk. Every
        # layer's grams in one [L·K, V·V] matrix: one product per chunk reads the chunk's sums once.
        drawn = {i: feedback[model.hidden_modules[i]].float() for i in present}
        flat = {i: b.reshape(draws, -1) for i, b in drawn.items()}  # [K, V·D]
        grams = e.new_empty(len(present) * draws, vocab * vocab, dtype=torch.float32)  # [L·K, V·V]
        for at, b in enumerate(drawn.values()):
            torch.matmul(b, b.transpose(1, 2), out=grams[at * draws : (at + 1) * draws].view(draws, vocab, vocab))
        dots: dict[int, list[Tensor]] = {i: [] for i in present}
        norms: list[Tensor] = []
        for rows in range(0, n, SEQUENCE_CHUNK):
            ec = e[rows : rows + SEQUENCE_CHUNK].float()
            across = ec.transpose(1, 2)  # [chunk, V, T]
            errors = torch.bmm(across, ec).reshape(len(ec), -1)  # Σ_t e_tᵀ e_t, [chunk, V·V], shared by every layer
            norms.append(grams @ errors.T)
            for i in present:
                gc = targets[i][rows : rows + SEQUENCE_CHUNK].reshape(len(ec), t, -1).float()
                dots[i].append(flat[i] @ torch.bmm(across, gc).reshape(len(ec), -1).T)
        every = torch.cat(norms, 1).double()
        for at, i in enumerate(present):
            terms[i] = (torch.cat(dots[i], 1).double(), every[at * draws : (at + 1) * draws])
        return terms

    @staticmethod
    def _by_position(rows: Tensor, n: int, b: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
        """<c, g> and |c|² of each draw of ``b`` ([K, V, width]), one draw at a time, for the
        error rows [N·T, V] of ``n`` sequences (float32, as ``b``)."""
        per_token = g.reshape(len(rows), -1).float()
        dots, norms = [], []
        for bk in b:
            c = rows @ bk
            # row dot products without a product tensor [N·T, width] (a language model's batch: 4 MB each)
            dots.append(torch.einsum("nd,nd->n", c, per_token).double().view(n, -1).sum(1))
            norms.append(torch.einsum("nd,nd->n", c, c).double().view(n, -1).sum(1))
        return torch.stack(dots), torch.stack(norms)


class SignDirectFeedbackAlignment(DirectFeedbackAlignment):
    """c_l = sign(e) · B_l: the error's signs, not its sizes, are projected (the DRTP code's sDFA)."""

    name = "sdfa"
    description = "sign DFA; c_l = sign(e) · B_l, B as for dfa (the DRTP code's sDFA)"
    credit_scales_with_error = False

    def signal(self, batch: Batch) -> Tensor:
        return torch.sign(super().signal(batch))


class DirectRandomTargetProjection(DirectFeedbackAlignment):
    """c_l = y* · B_l: the target, not the error, is projected (Frenkel et al.): a label's one-hot
    row, or the target row itself under a loss with float targets (bce, mse), as the DRTP code
    projects whatever targets its loss takes (its default: BCE on one-hot rows)."""

    name = "drtp"
    description = "direct random target projection; c_l = onehot(y) · B_l (or the float target row), B as for dfa"
    credit_scales_with_error = False
    projects_labels = True

    def signal(self, batch: Batch) -> Tensor:
        if batch.y.is_floating_point():  # the head's targets, one row of the output's shape a sample
            return batch.y.reshape(len(batch.y), -1).to(batch.error.dtype)
        return torch.nn.functional.one_hot(batch.y, batch.error.shape[1]).to(batch.error.dtype)

    def feedback_shapes(self, model: AdaptedModel, probe: Probe) -> dict[str, tuple[int, ...]]:
        """[classes, width]: the target is projected, wherever a library takes its error."""
        return super().feedback_shapes(model, replace(probe, projected=None))
