"""Print the README's table over all sample checkpoints (decision-utility style):
what accuracy alone, accuracy + aggregate Γ, and fa-audit's three checks say.

    python benchmarks/sample_table.py
"""

from __future__ import annotations

from pathlib import Path

from fa_audit.api import audit

SAMPLES = Path(__file__).resolve().parents[1] / "sample_checkpoints"
# (checkpoint, its frozen-blocks baseline): frozen is the baseline itself, fa_mlp has none.
ROWS = [
    ("bp", "frozen"),
    ("frozen", None),
    ("dfa", "frozen"),
    ("dfa_penalty", "frozen"),
    ("dfa_nofeedback", "frozen"),
    ("fa_mlp", None),
    ("dfa_ep1", "frozen"),
    ("dfa_ep2", "frozen"),
    ("dfa_ep3", "frozen"),
    ("dfa_ep5", "frozen"),
    ("dfa_ep8", "frozen"),
    ("small_cnn_dfa", "small_cnn_frozen"),
    ("vit_mini_dfa", "vit_mini_frozen"),
]


def main() -> None:
    print("| checkpoint | accuracy | aggregate Γ | deep Γ (h1..hL) | scale | reference | depth | fa-audit |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, baseline in ROWS:
        report = audit(SAMPLES / f"{name}.pt", baseline=None if baseline is None else SAMPLES / f"{baseline}.pt")
        m = report.measurements
        gamma = "refused" if m.aggregate.headline is None else f"{m.aggregate.headline:+.3f}"
        deep = [layer.cos for layer in m.layers[1:]]
        deep_text = "refused" if None in deep else " ".join(f"{c:+.2f}" for c in deep if c is not None)
        status = {c.name: c.status.value.replace("not_assessed", "n/a") for c in report.checks}
        print(
            f"| {name} | {m.accuracy:.3f} | {gamma} | {deep_text} | {status['scale_stability']} | "
            f"{status['reference_validity']} | {status['depth_utility']} | {report.verdict.value} |"
        )


if __name__ == "__main__":
    main()
