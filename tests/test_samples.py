"""The protocol paper's verdict pattern, reproduced on the bundled sample checkpoints."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from safetensors.torch import load_file

from fa_audit.report import AuditReport, Status, Verdict
from model_adapters import get_adapter

from .conftest import SAMPLES, load_sample

Audit = Callable[..., AuditReport]


def statuses(report: AuditReport) -> dict[str, Status]:
    return {c.name: c.status for c in report.checks}


def test_bp_with_its_frozen_baseline_is_trusted(audited: Audit) -> None:
    report = audited("bp", baseline=True)
    assert report.verdict is Verdict.TRUST and report.exit_code == 0
    assert all(layer.cos == pytest.approx(1.0, abs=1e-9) for layer in report.measurements.layers)
    margin = report.check("depth_utility").values["margin_pp"]
    assert margin > 4.0  # depth matters on the sample task: BP clears the frozen blocks by a lot


def test_vanilla_dfa_is_walked_back_by_scale_and_reference(audited: Audit) -> None:
    report = audited("dfa")
    s = statuses(report)
    assert report.verdict is Verdict.WALK_BACK and report.exit_code == 1
    assert s["scale_stability"] is Status.FAIL and s["reference_validity"] is Status.FAIL
    layers = report.measurements.layers
    assert max(layer.growth or 0 for layer in layers) > 1e4
    assert all(layer.g_norm < 1e-7 for layer in layers[1:])  # Mode 1: the reference is at the floor
    # ...per unit of output error too: the collapse is of the network's Jacobian, not a small loss
    assert all((layer.g_rel or 1) < 1e-7 for layer in layers[1:])
    # ...while float32 and float64 still agree: collapse of magnitude, not of arithmetic (Mode 1).
    assert all((layer.fp64_agree or 0) > 0.999 for layer in layers)
    [message] = report.check("reference_validity").messages
    assert message.startswith("Mode 1 (reference collapse): ") and "h1 (blocks.0)" in message
    assert report.modes == ["mode_1", "mode_2"]


def test_penalised_dfa_passes_scale_and_reference_but_not_depth(audited: Audit) -> None:
    report = audited("dfa_penalty", baseline=True)
    s = statuses(report)
    assert s["scale_stability"] is Status.PASS and s["reference_validity"] is Status.PASS
    assert s["depth_utility"] is Status.FAIL and report.verdict is Verdict.WALK_BACK
    du = report.check("depth_utility").values
    assert du["margin_pp"] < 2.0  # the fixed-scale DFA does not beat frozen random blocks
    low, high = du["margin_interval_pp"]  # ...and the eval set's noise cannot put it above 2 pp
    assert low < du["margin_pp"] < high < 2.0 and report.baseline is not None and report.baseline.paired
    assert report.modes == ["mode_2"]
    assert all(m.startswith("Mode 2 (no depth utility): ") for m in report.check("depth_utility").messages)
    # Mode 2: the aggregate Γ looks positive, yet most deep layers sit inside the null band.
    assert (report.measurements.aggregate.headline or 0) > 0.05
    assert du["credit_reach"] < 0.5


def test_a_part_left_unassessed_beside_a_failing_one_is_a_note(audited: Audit) -> None:
    """dfa_penalty without a baseline: credit reach fails, the margin is not assessed."""
    check = audited("dfa_penalty").check("depth_utility")
    assert check.status is Status.FAIL
    assert len(check.messages) == 1 and check.messages[0].startswith("Mode 2 (no depth utility): credit reach")
    assert any(note.startswith("functional part not assessed") for note in check.notes)
    fa_mlp = audited("fa_mlp").check("depth_utility")  # reach passes: the missing baseline is the message
    assert fa_mlp.status is Status.NOT_ASSESSED and fa_mlp.messages[0].startswith("functional part not assessed")


def test_dfa_without_feedback_refuses_every_cosine(audited: Audit) -> None:
    report = audited("dfa_nofeedback")
    for layer in report.measurements.layers:
        assert layer.cos is None and layer.z is None
        assert layer.refused is not None and layer.module in layer.refused
    assert report.measurements.aggregate.headline is None
    assert report.check("depth_utility").status is not Status.PASS


def test_fa_mlp_reports_per_layer_fa_cosines(audited: Audit) -> None:
    report = audited("fa_mlp")
    layers = report.measurements.layers
    assert [layer.module for layer in layers] == [f"layers.{i}" for i in range(4)]
    assert all(layer.cos is not None and layer.z is not None for layer in layers)
    # FA aligns the network to its feedback: the layer just below the head is well above the null band.
    assert (layers[-1].z or 0) > 3.0 and (layers[-1].cos or 0) > 0.1
    # No terminal LayerNorm, so no reference collapse (the paper's StudentNet observation).
    assert report.check("reference_validity").status is Status.PASS


def test_every_headline_number_carries_its_standard_error(audited: Audit) -> None:
    """Accuracy ± the binomial error √(p(1 − p)/(n − 1)) of its n samples; each Γ_l ± the error of a mean
    of n row cosines, below 1/√n (a cosine's deviation is at most 1) and above 0 (fa_mlp's rows differ)."""
    report = audited("fa_mlp")
    m = report.measurements
    assert m.metric_se == pytest.approx(math.sqrt(m.accuracy * (1 - m.accuracy) / (m.samples - 1)), rel=1e-12)
    assert report.to_dict()["metric"]["se"] == m.metric_se
    for layer in m.layers:
        assert layer.cos_se is not None and 1e-4 < layer.cos_se < 1 / math.sqrt(m.samples - layer.zero_norm_rows)


def test_early_snapshots_show_scale_firing_before_the_reference_collapses(audited: Audit) -> None:
    epochs = [1, 2, 3, 5, 8]
    reports = {e: audited(f"dfa_ep{e}") for e in epochs}
    first = {
        name: next((e for e in epochs if statuses(reports[e])[name] is Status.FAIL), None)
        for name in ("scale_stability", "reference_validity")
    }
    assert first["scale_stability"] == 1
    assert first["reference_validity"] is not None and first["reference_validity"] > first["scale_stability"]
    floor = [min(layer.g_norm for layer in reports[e].measurements.layers) for e in epochs]
    assert floor == sorted(floor, reverse=True)  # the reference sinks monotonically


def test_safetensors_bundle_with_sidecar_matches_the_pt_bundle(audited: Audit) -> None:
    pt, st = audited("dfa"), audited("dfa.safetensors")
    assert [layer.cos for layer in st.measurements.layers] == [layer.cos for layer in pt.measurements.layers]
    assert str(SAMPLES / "dfa.feedback.safetensors") in st.inputs


def test_dfa_numbers_agree_with_an_independent_float64_computation(audited: Audit) -> None:
    """growth, g_norm and cos recomputed here from scratch, in float64, on all eval data."""
    bundle = load_sample("dfa")
    model = get_adapter("resmlp").build(bundle["arch_config"]).module.double()
    model.load_state_dict(bundle["state_dict"])
    data = load_file(SAMPLES / "eval.safetensors")
    x, y = data["x"].double(), data["y"]
    logits, hidden = model(x, return_hidden=True)
    grads = torch.autograd.grad(torch.nn.functional.cross_entropy(logits, y, reduction="sum"), hidden)
    e = (logits.softmax(-1) - torch.nn.functional.one_hot(y, 10)).detach()
    report = audited("dfa")
    for i, (layer, h, g) in enumerate(zip(report.measurements.layers, hidden, grads, strict=True)):
        if i + 1 < len(hidden):
            ratio = (hidden[i + 1].norm(dim=-1) / h.norm(dim=-1)).detach()
            assert layer.growth == pytest.approx(float(ratio.quantile(0.5)), rel=1e-4)
        assert layer.g_norm == pytest.approx(float(g.norm(dim=-1).quantile(0.5)), rel=1e-3)
        c = e @ bundle["feedback"][layer.module].double()
        cos = (c * g).sum(-1) / (c.norm(dim=-1) * g.norm(dim=-1))
        assert layer.cos == pytest.approx(float(cos.mean()), abs=1e-4)


@pytest.fixture(scope="module")
def image_reports() -> dict[str, AuditReport]:
    from fa_audit.api import audit

    return {
        arch: audit(SAMPLES / f"{arch}_dfa.pt", baseline=SAMPLES / f"{arch}_frozen.pt", device="cpu")
        for arch in ("small_cnn", "vit_mini")
    }


def test_dfa_conv_net_keeps_its_reference_but_its_deep_stages_are_not_useful(
    image_reports: dict[str, AuditReport],
) -> None:
    """On a conv net without a terminal LayerNorm nothing drives the reference to the
    floor: scale and reference hold, yet the DFA-trained stages do not beat frozen ones."""
    report = image_reports["small_cnn"]
    s = statuses(report)
    assert s["scale_stability"] is Status.PASS and s["reference_validity"] is Status.PASS
    assert s["depth_utility"] is Status.FAIL and report.verdict is Verdict.WALK_BACK
    assert report.check("depth_utility").values["margin_pp"] < 0
    assert all(layer.g_norm > 0.1 for layer in report.measurements.layers)
    assert report.baseline is not None and report.baseline.deep_blocks_at_init is True


def test_dfa_vit_explodes_its_stream_behind_the_terminal_layernorm(image_reports: dict[str, AuditReport]) -> None:
    """ViT-Mini has the terminal LayerNorm: the residual stream explodes (scale fails) and
    ‖g‖ falls by four orders of magnitude past the embedding, while no deep layer's
    cosine clears its null band."""
    report = image_reports["vit_mini"]
    s = statuses(report)
    layers = report.measurements.layers
    assert s["scale_stability"] is Status.FAIL and max(layer.growth or 0 for layer in layers) > 1000
    assert all(layer.g_norm < 1e-4 for layer in layers[1:]) and layers[0].g_norm > 0.1
    assert s["depth_utility"] is Status.FAIL and report.check("depth_utility").values["credit_reach"] == 0.0
    assert report.check("depth_utility").values["margin_pp"] < -20


def test_a_credit_of_far_lower_rank_than_the_gradient_is_named(audited: Audit) -> None:
    """The small CNN's DFA credit e · B has rank at most the 10 classes against a gradient of rank
    ~100 over 256 images: rank collapse below depth_utility.min_rank_ratio at h0 (0.074, its 95 %
    interval below 0.1), possible at h1 (0.086, an interval reaching 0.103), each layer named."""
    report = audited("small_cnn_dfa")
    notes = [n.split(":")[0] for n in report.check("depth_utility").notes if "rank collapse at " in n]
    assert notes == ["rank collapse at h0 (stages.0)", "possible rank collapse at h1 (stages.1)"]
    assert all((layer.rank_ratio or 0) < 0.1 for layer in report.measurements.layers[:2])
    assert not any(n.startswith("rank collapse") for n in audited("fa_mlp").check("depth_utility").notes)
