"""The null band in closed form, for credit that is a random linear projection of one signal
row per sample: c_i = r_i · B with B's entries iid Gaussian (DFA projects the output error,
DRTP the target). Drawn null means only estimate μ and σ (20 draws: σ to ±16 %, and a layer
near ``null_z`` then needs hundreds); here they are exact, over the very rows Γ is the mean of.

For unit rows ĝ_i of the gradient and r̂_i of the signal, b_i = r̂_i · B is a standard Gaussian
vector in the layer's D dimensions, and b_i, b_j are correlated coordinate by coordinate with
ρ_ij = r̂_i · r̂_j. By B ↦ −B the null's mean is 0; by rotation invariance
E[cos_i cos_j] = (ĝ_i · ĝ_j) h_D(ρ_ij) / D with h_D(ρ) = E[b̂_i · b̂_j] =
c_D ρ ₂F₁(½, ½; D/2 + 1; ρ²), c_D = (2/D) (Γ((D+1)/2) / Γ(D/2))², h_D(1) = 1. So over N rows

    N² D σ² = N + c_D (‖S‖²_F − N) + Σ_{i≠j} (ĝ_i · ĝ_j) r_D(ρ_ij),   S = Σ_i ĝ_i r̂_iᵀ,

where r_D(ρ) = h_D(ρ) − c_D ρ, the hypergeometric series past its first term, lies in
[0, ρ² (1 − c_D)] for ρ ≥ 0 (its coefficients are positive and sum to 1/c_D − 1; odd in ρ), and
|ĝ_i · ĝ_j| ≤ 1: above, the pairs add at most (1 − c_D) (‖Q‖²_F − N), Q = Σ_i r̂_i r̂_iᵀ, O(1/D)
relative (at most 2 % on the bundled samples). Below, the sum of r_D over every pair, the
diagonal's included, is ≥ 0 (a Hadamard product of PSD matrices: r_D(R) is a positive series in
Hadamard powers of R), so N² D σ² ≥ c_D ‖S‖²_F. S, Q and N are sums over every eval row Γ is
the mean of, not a subsample (σ is then the spread of Γ itself, and the sums cost width × C
multiply-adds a row, no more than the credit e · B): they stream over the batches and add over
ranks. σ is reported as the middle of the range the two bounds leave it, so it is off the exact σ
by at most half that range. With one output (a scalar regression) every ρ_ij is ±1 and
N² D σ² = ‖S‖²_F exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .functional import Tensor, reciprocals, row_norms

CLOSED_ENTRIES = 1 << 22
"""A layer takes the closed form while S ([width, C]) and Q ([C, C]) are at most this large
(float64: 32 MiB each); a wider one is measured by drawing."""


def first_order(width: int) -> float:
    """c_D: the slope at ρ = 0 of the mean cosine between two ρ-correlated Gaussian vectors."""
    return 2.0 / width * math.exp(2.0 * (math.lgamma((width + 1) / 2) - math.lgamma(width / 2)))


def closes(width: int, signal_width: int) -> bool:
    """Whether a layer of ``width`` units takes the closed form for a signal of ``signal_width``."""
    return max(width, signal_width) * signal_width <= CLOSED_ENTRIES


@dataclass
class ClosedNull:
    """One layer's running sums over the eval rows (rows with a zero gradient or signal
    left out, as the cosine leaves them out)."""

    width: int
    cross: Tensor | None = None
    """S = Σ_i ĝ_i r̂_iᵀ, [width, C]."""
    signal_gram: Tensor | None = None
    """Q = Σ_i r̂_i r̂_iᵀ, [C, C]."""
    rows: int = 0

    def _add(self, cross: Tensor, gram: Tensor, rows: int) -> None:
        """Summed on the gradients' device, batch after batch (no transfer, no wait per batch)."""
        if self.cross is None or self.signal_gram is None:  # copies: the batch's Q is every layer's, and grows in place
            self.cross, self.signal_gram = cross.clone(), gram.clone()
        else:
            self.cross += cross
            self.signal_gram += gram
        self.rows += rows

    def to_cpu(self) -> None:
        """The sums on the CPU, as the ranks' gather takes them, once the pass is done."""
        if self.cross is not None and self.signal_gram is not None:
            self.cross, self.signal_gram = self.cross.cpu(), self.signal_gram.cpu()

    @classmethod
    def merged(cls, parts: Sequence[ClosedNull]) -> ClosedNull:
        """Every rank's sums as one process would hold them."""
        held = [p for p in parts if p.cross is not None]
        if not held:
            return cls(parts[0].width)
        return cls(
            parts[0].width,
            torch.stack([p.cross for p in held if p.cross is not None]).sum(0),
            torch.stack([p.signal_gram for p in held if p.signal_gram is not None]).sum(0),
            sum(p.rows for p in held),
        )

    def spread(self) -> tuple[float, float, float] | None:
        """σ (the middle), and the least and greatest σ the bounds allow; None under two rows or
        where nothing bounds σ away from 0 (every gradient orthogonal to every signal)."""
        n, d = self.rows, self.width
        if n < 2 or self.cross is None or self.signal_gram is None:
            return None
        c = first_order(d)
        scale = float(n) * n * d
        aligned = float(self.cross.pow(2).sum())
        if self.signal_gram.numel() == 1:  # one output: every ρ_ij is ±1, h_D(±1) = ±1, and σ² is exact
            exact = math.sqrt(aligned / scale)
            return (exact, exact, exact) if exact > 0 else None
        variance = (n + c * (aligned - n)) / scale
        pairs = max(float(self.signal_gram.pow(2).sum()) - n, 0.0)  # Σ_{i≠j} ρ_ij²
        least = max(variance - (1.0 - c) * pairs / scale, c * aligned / scale)
        if least <= 0:
            return None
        low, high = math.sqrt(least), math.sqrt(variance + (1.0 - c) * pairs / scale)
        return (low + high) / 2, low, high


def add_rows(nulls: Sequence[ClosedNull], signal: Tensor, grads: Sequence[Tensor], grad_norms: Tensor) -> None:
    """One batch into the sums of several layers that share its signal rows [n, C]: their flattened
    gradients [n, width] (float64) and row norms [layers, n]. This runs on every eval batch, so the
    signal's part is formed once for all the layers, S as gᵀ (r̂ / ‖g‖) (the [n, C] side scaled,
    never a copy of a gradient), and a row whose gradient is zero is taken out of Q only where one is."""
    units = signal.double()
    has_signal = row_norms(units) > 0
    units = units * reciprocals(row_norms(units))[:, None]  # a zero row stays zero: it adds nothing
    gram = units.T @ units
    inverse = reciprocals(grad_norms.double())
    gone = has_signal & (grad_norms == 0)
    rows = int(has_signal.sum())
    lost = gone.sum(1).tolist()
    for null, grad, scale, dropped, lost_rows in zip(nulls, grads, inverse, gone, lost, strict=True):
        cross = grad.double().T @ (units * scale[:, None])
        kept_gram = gram if not lost_rows else gram - units[dropped].T @ units[dropped]
        null._add(cross, kept_gram, rows - lost_rows)
