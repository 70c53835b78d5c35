"""Loss heads beyond one-label classifiers (issue #33): the mean squared error on the recipe's
regression samples (a resmlp with 4 real outputs, trained by BP, with its deep blocks frozen,
and by DFA from ∂(mse)/∂output), binary cross-entropy and a user's loss. Each head's error is
exact against autograd in float64; the DFA sample's Γ equals a float64 computation written
here; depth utility compares the mean eval loss with the frozen-blocks baseline's; and every
wrong target, head or loss is exit 2 with one sentence."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from fa_audit import ExitCode, InputError, audit
from fa_audit.adapt.fit_keys import fit_bundle
from fa_audit.api import build_model
from fa_audit.loading import load_bundle, load_eval_data
from fa_audit.loss_heads import get_loss_head
from fa_audit.measure.reference_check import SETTLED
from fa_audit.report import Status

from .cli_runner import run
from .conftest import SAMPLES

BP, FROZEN, DFA = (SAMPLES / f"regression_{name}.pt" for name in ("bp", "frozen", "dfa"))


@pytest.mark.parametrize("name", ["mse", "bce"])
def test_each_heads_error_is_autograds_in_float64(name: str) -> None:
    head = get_loss_head(name)
    g = torch.Generator().manual_seed(0)
    out = torch.randn(64, 5, generator=g, dtype=torch.float64) * 4
    out[0, 0] = 60.0  # saturated: σ(60) rounds to 1 in float64, σ(z) − 1 would be 0
    y = (torch.rand(64, 5, generator=g) > 0.5).double() if name == "bce" else torch.randn(64, 5, generator=g).double()
    y[0, 0] = 1.0
    torch_loss = {
        "mse": lambda o: F.mse_loss(o, y, reduction="none").mean(1),
        "bce": lambda o: F.binary_cross_entropy_with_logits(o, y, reduction="none").mean(1),
    }[name]
    leaf = out.clone().requires_grad_()
    (expected,) = torch.autograd.grad(torch_loss(leaf).sum(), leaf)
    direction, scale = head.output_error(out, y)
    error = direction * scale.unsqueeze(1)
    rest = torch.ones_like(error, dtype=torch.bool)
    rest[0, 0] = False  # the saturated entry: autograd's σ(60) − 1 cancels to 0 (bce)
    # autograd's σ(z) − 1 loses digits as σ(z) nears 1 (4e-12 at z = 11): 1e-9, not float64's 1e-16
    assert torch.allclose(error[rest], expected[rest], rtol=1e-9, atol=1e-300)
    assert float(direction.abs().amax(1).min()) == 1.0  # each row's largest entry is ±1: nothing underflows
    assert torch.allclose(head.per_sample_loss(out, y), torch_loss(out), rtol=1e-12, atol=1e-300)
    exact = -torch.sigmoid(torch.tensor(-60.0, dtype=torch.float64)) / 5 if name == "bce" else expected[0, 0]
    assert float(error[0, 0]) == pytest.approx(float(exact), rel=1e-12) and float(error[0, 0]) != 0.0


def _float64_dfa_cosines() -> list[float]:
    """Γ per layer written out here: the DFA credit e·B_l against the gradient of the summed
    per-sample mse at each h_l, both in float64, averaged over the eval samples."""
    bundle = fit_bundle(load_bundle(DFA))
    model = build_model(bundle)
    model.module.double()
    data = load_eval_data(SAMPLES / "regression_eval.safetensors", "values")
    x, y = torch.as_tensor(data.x[0 : data.samples]).double(), torch.as_tensor(data.y[0 : data.samples]).double()
    with torch.enable_grad():
        out, hidden = model.forward_hidden(x)
        grads = torch.autograd.grad(((out - y) ** 2).mean(1).sum(), hidden)
    e = (2 * (out - y) / out.shape[1]).detach()
    cosines = []
    for name, g in zip(model.hidden_modules, grads, strict=True):
        credit = e @ bundle.feedback[name].double()
        g = g.flatten(1)
        cosines.append(float(((credit * g).sum(1) / (credit.norm(dim=1) * g.norm(dim=1))).mean()))
    return cosines


def test_the_regression_samples_audit_in_their_own_loss() -> None:
    bp = audit(BP, baseline=FROZEN, device="cpu")
    assert bp.measurements.loss_head == "mse" and bp.measurements.metric == "loss"
    depth = bp.check("depth_utility")
    assert depth.status is Status.PASS, depth.messages
    assert depth.values["margin_pct"] > 30 and depth.values["margin_interval_pct"][0] > 10  # BP 0.022 vs frozen 0.044
    assert all(layer.cos == pytest.approx(1.0) for layer in bp.measurements.layers)
    document = bp.to_dict()
    assert document["accuracy"] is None and document["metric"]["name"] == "loss"
    data = load_eval_data(SAMPLES / "regression_eval.safetensors", "values")
    with torch.no_grad():
        model = build_model(fit_bundle(load_bundle(BP)))
        x, y = torch.as_tensor(data.x[0 : data.samples]), torch.as_tensor(data.y[0 : data.samples])
        truth = float(F.mse_loss(model.forward_hidden(x.float())[0].double(), y.double()))
    assert document["metric"]["value"] == pytest.approx(truth, rel=1e-6)

    dfa = audit(DFA, baseline=FROZEN, device="cpu")
    assert [layer.cos for layer in dfa.measurements.layers] == pytest.approx(_float64_dfa_cosines(), abs=2e-5)
    assert all(layer.grad_check is not None and layer.grad_check < SETTLED for layer in dfa.measurements.layers)
    depth = dfa.check("depth_utility")
    assert depth.status is Status.FAIL and any("Mode 2" in m and "mse loss" in m for m in depth.messages)


def test_a_users_loss_proportional_to_mse_gives_its_cosines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Half the summed squared error: the same directions as mse, so the same Γ; its metric is its own loss."""
    (tmp_path / "myloss.py").write_text(
        "def half_sse(output, target):\n    return 0.5 * ((output - target) ** 2).sum(1)\n"
        "def scalar(output, target):\n    return ((output - target) ** 2).mean()\n"
        "def infinite(output, target):\n    return ((output - target) ** 2).sum(1) / 0.0\n"
    )
    monkeypatch.chdir(tmp_path)
    mse = audit(DFA, device="cpu", max_samples=512)
    data = str(SAMPLES / "regression_eval.safetensors")
    with pytest.raises(InputError, match=r"contradicts the checkpoint's meta\.loss 'mse'"):
        audit(DFA, device="cpu", max_samples=512, loss="module:myloss:half_sse")
    bundle = load_bundle(DFA)
    bare = replace(bundle, meta={k: v for k, v in bundle.meta.items() if k != "loss"})
    own = audit(bare, device="cpu", max_samples=512, loss="module:myloss:half_sse", data=data)
    assert [la.cos for la in own.measurements.layers] == pytest.approx([la.cos for la in mse.measurements.layers])
    assert own.measurements.accuracy == pytest.approx(0.5 * 4 * mse.measurements.accuracy, rel=1e-9)
    for name, said in (
        ("scalar", r"returns shape \[\]; it must return one loss per sample"),
        ("infinite", "NaN or Inf"),
    ):
        with pytest.raises(InputError, match=said):
            audit(bare, device="cpu", max_samples=512, loss=f"module:myloss:{name}", data=data)


def _sample_with(tmp_path: Path, meta: dict[str, object]) -> Path:
    bundle = load_bundle(DFA)
    model = build_model(fit_bundle(bundle)).module
    import fa_audit

    path = tmp_path / "sample.pt"
    fa_audit.save_bundle(path, model, arch=bundle.arch, arch_config=bundle.arch_config, method="dfa",
                         feedback=bundle.feedback, meta=meta)  # fmt: skip
    return path


@pytest.mark.parametrize(
    ("targets", "args", "said"),
    [
        (
            "labels",
            ["--loss", "mse"],
            r"y holds label [4-8]; integer labels for the mse loss are class indices in \[0, 4\)",
        ),
        ("label grid", ["--loss", "bce"], "y has dtype I64; the loss head needs float targets"),
        ("regression", ["--loss", "cross_entropy"], "labels must be integers"),
        ("short", ["--loss", "mse"], r"y has per-sample shape \[3\]; the mse loss needs \[4\]"),
        ("nan", ["--loss", "mse"], "y contains NaN or Inf; the mse loss needs finite targets"),
        ("regression", ["--loss", "huber"], r"unknown loss head 'huber' \(registered: bce, cross_entropy, mse, token_"),
        ("regression", ["--loss", "bce"], r"targets outside \[0, 1\]"),
        ("regression", ["--loss", ""], "unknown loss head ''"),
        ("huge", ["--loss", "mse"], r"y holds 1e\+200, beyond what a float32 model can output"),
    ],
)
def test_wrong_targets_or_heads_are_one_sentence(tmp_path: Path, targets: str, args: list[str], said: str) -> None:
    from safetensors.torch import save_file

    x = torch.randn(64, 24)
    y = {
        "labels": torch.randint(0, 9, (64,)),  # a 4-output model: labels past 3 are not its classes
        "label grid": torch.randint(0, 2, (64, 4)),
        "regression": torch.randn(64, 4),
        "short": torch.randn(64, 3),
        "nan": torch.randn(64, 4).index_put_((torch.tensor([5]), torch.tensor([1])), torch.tensor(float("nan"))),
        "huge": torch.randn(64, 4, dtype=torch.float64).index_put_(
            (torch.tensor([3]), torch.tensor([1])), torch.tensor(1e200, dtype=torch.float64)
        ),
    }[targets]
    save_file({"x": x, "y": y}, str(tmp_path / "data.safetensors"))
    path = _sample_with(tmp_path, {})
    code, out, err = run("run", path, "--data", tmp_path / "data.safetensors", *args, "--device", "cpu")
    assert code == ExitCode.INPUT_ERROR and out == "" and len(err.strip().splitlines()) == 1, out + err
    assert "Traceback" not in err and re.search(said, err), err


def test_a_checkpoint_cannot_name_code_as_its_loss(tmp_path: Path) -> None:
    (tmp_path / "evil.py").write_text("import os\nos._exit(0)\n")
    path = _sample_with(tmp_path, {"loss": "module:evil:f"})
    code, out, err = run("run", path, "--data", SAMPLES / "regression_eval.safetensors", "--device", "cpu")
    assert code == ExitCode.INPUT_ERROR and "a checkpoint cannot name code to run" in err, out + err
    code, _, err = run("run", path, "--data", SAMPLES / "regression_eval.safetensors", "--loss", "mse")
    assert code == ExitCode.INPUT_ERROR and "contradicts the checkpoint's meta.loss" not in err  # refused first


def test_the_json_of_a_regression_audit_follows_the_schema() -> None:
    import jsonschema

    from fa_audit.report.schema import schema

    code, out, _ = run("run", DFA, "--max-samples", "256", "--json", "-", "--device", "cpu")
    document = json.loads(out)
    jsonschema.validate(document, schema())
    assert code == ExitCode.WALK_BACK and document["loss_head"] == "mse" and document["schema_version"] == 6


def test_the_fitted_baseline_trains_on_the_heads_loss() -> None:
    """--fit-baseline on the regression sample: the interface trained on the mse, compared by it."""
    report = audit(DFA, fit_baseline=True, use_cache=False, device="cpu")
    assert report.baseline is not None and report.baseline.source == "fitted"
    frozen = audit(FROZEN, device="cpu").measurements.accuracy  # the recipe's own frozen-blocks net
    assert report.baseline.accuracy == pytest.approx(frozen, rel=0.2)
    assert report.check("depth_utility").values["margin_unit"] == "%"


def test_drtp_projects_the_heads_own_target_rows(tmp_path: Path) -> None:
    """Under a loss with float targets DRTP's credit is each sample's target row times B, as the DRTP
    code projects what its loss takes: the regression sample's targets, 4 a sample, made one-hot
    the cosines change (another signal), and integer labels are those one-hot rows."""
    from safetensors.torch import load_file, save_file

    bundle = replace(load_bundle(_sample_with(tmp_path, {"loss": "mse"})), method="drtp")
    data = load_file(SAMPLES / "regression_eval.safetensors")
    labels = data["y"].argmax(1)
    save_file({"x": data["x"], "y": labels}, str(tmp_path / "labels.safetensors"))
    save_file({"x": data["x"], "y": F.one_hot(labels, 4).float()}, str(tmp_path / "rows.safetensors"))
    kept = {"device": "cpu", "max_samples": 512}
    values = audit(bundle, data=SAMPLES / "regression_eval.safetensors", **kept).measurements.layers
    by_label = audit(bundle, data=tmp_path / "labels.safetensors", **kept).measurements.layers
    by_row = audit(bundle, data=tmp_path / "rows.safetensors", **kept).measurements.layers
    assert [la.cos for la in by_label] == pytest.approx([la.cos for la in by_row], abs=1e-12)
    assert all(la.cos is not None and la.null_std_range is not None for la in values)  # the closed-form null
    assert max(abs(a.cos - b.cos) for a, b in zip(values, by_row, strict=True)) > 1e-3  # type: ignore[operator]


def test_drtp_needs_targets_of_the_outputs_shape() -> None:
    with pytest.raises(InputError, match="'drtp' projects each sample's target row, so it needs a loss head whose"):
        audit(replace(load_bundle(SAMPLES / "gpt_mini_dfa.pt"), method="drtp"), device="cpu", max_samples=8)


def test_the_api_pages_in_memory_line_runs_with_str_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/api.md: audit_bundle(load_bundle("run.pt"), load_eval_data("eval.safetensors")) (a str
    path once crashed with "'str' object has no attribute 'stat'"), and the same for a regression."""
    from fa_audit import audit_bundle

    monkeypatch.chdir(SAMPLES.parent)
    bundle, data = load_bundle("sample_checkpoints/dfa.pt"), load_eval_data("sample_checkpoints/eval.safetensors")
    report = audit_bundle(bundle, data, max_samples=256, device="cpu")
    assert report.verdict.value == "WALK_BACK"
    regression = audit_bundle(load_bundle("sample_checkpoints/regression_dfa.pt"),
                              load_eval_data("sample_checkpoints/regression_eval.safetensors", "values"),
                              max_samples=256, device="cpu")  # fmt: skip
    assert regression.measurements.metric == "loss"


@pytest.mark.parametrize("name", ["mse", "bce"])
def test_the_best_constant_outputs_loss_is_the_heads_own_minimum(name: str) -> None:
    """The constant the check holds a baseline against is the best one: the head's own loss at the
    constant output found by minimising it numerically, from the streamed sums of two batches."""
    head = get_loss_head(name)
    y = torch.rand(300, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = (y > 0.3).double() if name == "bce" else 4 * y - 1
    sums = head.target_sums(y[:120]) + head.target_sums(y[120:])  # type: ignore[operator]
    constant = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([constant], max_iter=200, tolerance_grad=1e-12, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = head.per_sample_loss(constant.expand(300, 3), y).mean()
        loss.backward()
        return loss

    optimizer.step(closure)
    best = float(head.per_sample_loss(constant.detach().expand(300, 3), y).mean())
    assert head.constant_loss(sums, 300) == pytest.approx(best, rel=1e-9)


def test_a_regression_baseline_no_better_than_a_constant_is_refused(tmp_path: Path) -> None:
    """A frozen-blocks baseline whose head was zeroed reaches the loss of a constant output: any
    network would beat it by the margin, so it is refused as a baseline, not used (exit 2)."""
    saved = torch.load(FROZEN, weights_only=True)
    saved["state_dict"] = {
        k: torch.zeros_like(v) if k.startswith("head.") else v for k, v in saved["state_dict"].items()
    }
    torch.save(saved, tmp_path / "regression_frozen.pt")
    code, _, err = run("run", DFA, "--baseline", tmp_path / "regression_frozen.pt", "--device", "cpu", "-q")
    assert code == ExitCode.INPUT_ERROR
    assert "cannot serve as the frozen-blocks baseline" in err and "constant output" in err
    report = audit(BP, baseline=FROZEN, device="cpu")  # the real one is far below it: 0.044 against 0.40
    data = load_eval_data(SAMPLES / "regression_eval.safetensors", "values")
    y = torch.as_tensor(data.y[0 : data.samples]).double()
    assert report.measurements.constant_loss == pytest.approx(float(y.var(0, unbiased=False).mean()), rel=1e-9)
    assert report.to_dict()["metric"]["constant_loss"] == report.measurements.constant_loss
