"""Checkpoints as real FA code saves them: each library's feedback convention, built
exactly as that code names and shapes it (keys, nesting, prefix, container), audited
with no flags beyond --arch, --arch-config and, where the convention does not fix it,
--method. Every per-layer Γ is checked against that library's backward rule written out
here in float64, independently of fa-audit's code."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from fa_audit import ExitCode

from .cli_runner import run
from .conftest import SAMPLES, load_sample

SAMPLE = load_sample("fa_mlp")  # a real FA-trained tanh MLP: layers.0..3 (24 -> 64), head (64 -> 10)
LAYERS = ["layers.0", "layers.1", "layers.2", "layers.3", "head"]
CONFIG = json.dumps(SAMPLE["arch_config"])
N = 256
EVAL = load_file(SAMPLES / "eval.safetensors")
X, Y = EVAL["x"][:N].double(), EVAL["y"][:N]
DATA = ["--data", str(SAMPLES / "eval.safetensors")]
TOL = 2e-5  # a float32 forward against this float64 one

Backward = dict[str, torch.Tensor]
"""The matrix each layer sends its output gradient back through, by layer name."""


def _forward(state: dict[str, torch.Tensor], loss: str = "cross_entropy") -> tuple[list[torch.Tensor], torch.Tensor]:
    """The hidden states and the output error: softmax − onehot, or σ − onehot for BCE on one-hot rows."""
    h, hidden = X, []
    for name in LAYERS[:-1]:
        h = torch.tanh(h @ state[f"{name}.weight"].double().T + state[f"{name}.bias"].double())
        hidden.append(h)
    logits = h @ state["head.weight"].double().T + state["head.bias"].double()
    probabilities = torch.sigmoid(logits) if loss == "bce" else torch.softmax(logits, -1)
    return hidden, probabilities - torch.nn.functional.one_hot(Y, 10).double()


def _chain(hidden: list[torch.Tensor], e: torch.Tensor, through: Backward) -> list[torch.Tensor]:
    """The output error sent back layer by layer through ``through`` and tanh's derivative."""
    credit = [e @ through["head"].double()]
    for layer in range(len(hidden) - 1, 0, -1):
        credit.insert(0, (credit[0] * (1 - hidden[layer] ** 2)) @ through[LAYERS[layer]].double())
    return credit


Statistic = Callable[[torch.Tensor, torch.Tensor], float]


def _row_cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))


def _mean_cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(_row_cos(a, b).mean())


def _cos_se(a: torch.Tensor, b: torch.Tensor) -> float:
    """The mean cosine's standard error over the samples, from the rows themselves."""
    rows = _row_cos(a, b)
    return float(rows.std() / len(rows) ** 0.5)


def reference_fa(state: dict[str, torch.Tensor], backward: Backward, stat: Statistic = _mean_cos) -> list[float]:
    hidden, e = _forward(state)
    true = _chain(hidden, e, {n: state[f"{n}.weight"] for n in LAYERS})
    return [stat(c, g) for c, g in zip(_chain(hidden, e, backward), true, strict=True)]


def reference_direct(
    state: dict[str, torch.Tensor],
    per_hidden: list[torch.Tensor],
    target: bool = False,
    stat: Statistic = _mean_cos,
    loss: str = "cross_entropy",
    sign: bool = False,
) -> list[float]:
    """DFA (c_l = e · B_l), sDFA (sign(e) · B_l) or DRTP (c_l = onehot(y) · B_l), against the gradient of ``loss``."""
    hidden, e = _forward(state, loss)
    true = _chain(hidden, e, {n: state[f"{n}.weight"] for n in LAYERS})
    signal = torch.nn.functional.one_hot(Y, 10).double() if target else torch.sign(e) if sign else e
    return [stat(signal @ b.double().flatten(1), g) for b, g in zip(per_hidden, true, strict=True)]


def audit_cli(path: Path, *flags: str) -> dict[str, object]:
    code, out, err = run(
        "run",
        path,
        "--arch",
        "mlp",
        "--arch-config",
        CONFIG,
        "--data",
        SAMPLES / "eval.safetensors",
        "--max-samples",
        N,
        "--json",
        "-",
        *flags,
    )
    assert code in (ExitCode.TRUST, ExitCode.WALK_BACK, ExitCode.INCOMPLETE), err
    report: dict[str, object] = json.loads(out)
    return report


def cosines(report: dict[str, object]) -> list[float]:
    return [layer["cos"] for layer in report["layers"]]  # type: ignore[index, union-attr]


def _weights() -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in SAMPLE["state_dict"].items()}


def _rand(*shape: int, seed: int) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# --- BioTorch ---------------------------------------------------------------------------


def biotorch_fa_state(kind: str) -> tuple[dict[str, torch.Tensor], Backward]:
    """A BioTorch model's state dict as its trainer saves it (`module.` from DataParallel),
    with the B its backward actually uses."""
    state, used = _weights(), {}
    for i, name in enumerate(LAYERS):
        w = state[f"{name}.weight"]
        m = _rand(*w.shape, seed=i) * 0.1
        usf = 0.1 * torch.sign(w)  # BioTorch's uSF keeps scale · sign(W) of its last forward
        stored = {"fa": m, "frsf": m.abs(), "brsf": m.abs() * torch.sign(w), "usf": usf}[kind]
        used[name] = {"fa": m, "frsf": m.abs() * torch.sign(w), "brsf": stored, "usf": usf}[kind]
        state[f"{name}.weight_backward"] = stored
        state[f"{name}.bias_backward"] = torch.zeros_like(state[f"{name}.bias"])
    return {f"module.{k}": v for k, v in state.items()}, used


@pytest.mark.parametrize("kind", ["fa", "frsf", "brsf"])
def test_biotorch_fa_family(kind: str, tmp_path: Path) -> None:
    state, used = biotorch_fa_state(kind)
    checkpoint = {"epoch": 30, "arch": "mlp", "state_dict": state, "best_prec1": 91.2, "optimizer": {"state": {}}}
    torch.save(checkpoint, tmp_path / "model_best.pth.tar")
    report = audit_cli(tmp_path / "model_best.pth.tar", "--method", kind)
    assert cosines(report)[:4] == pytest.approx(reference_fa(SAMPLE["state_dict"], used)[:4], abs=TOL)
    errors = [layer["cos_se"] for layer in report["layers"]][:4]  # type: ignore[index, union-attr]
    assert errors == pytest.approx(reference_fa(SAMPLE["state_dict"], used, _cos_se)[:4], rel=1e-3)
    loading = report["loading"]
    assert loading["convention"] == "biotorch" and loading["prefix_stripped"] == "module."  # type: ignore[index]
    assert loading["feedback_sources"]["layers.1"] == "layers.1.weight_backward"  # type: ignore[index]
    assert report["meta"]["epoch"] == 30  # type: ignore[index]


def test_biotorch_frsf_magnitudes_are_never_taken_for_b(tmp_path: Path) -> None:
    """frSF stores |M|: read as an FA matrix it passes every shape check and gives a wrong Γ."""
    state, _ = biotorch_fa_state("frsf")
    torch.save(state, tmp_path / "frsf.pt")
    code, _, err = run("run", tmp_path / "frsf.pt", "--arch", "mlp", "--arch-config", CONFIG, "--method", "fa", *DATA)
    assert code == ExitCode.INPUT_ERROR and "--method frsf" in err


@pytest.mark.parametrize(
    ("stored", "method", "says"), [("fa", "frsf", "fa, kp or brsf"), ("frsf", "brsf", "--method frsf")]
)
def test_signed_and_magnitude_feedback_are_never_confused(stored: str, method: str, says: str, tmp_path: Path) -> None:
    """Both ways round: a signed B read by frSF would become |B| · sign(W) (fa_mlp's Γ 0.33 →
    0.64 at h0), frSF's magnitudes read as brSF's B a wrong B at every layer."""
    state, _ = biotorch_fa_state(stored)
    torch.save(state, tmp_path / "b.pt")
    code, _, err = run("run", tmp_path / "b.pt", "--arch", "mlp", "--arch-config", CONFIG, "--method", method, *DATA)
    assert code == ExitCode.INPUT_ERROR and says in err and "b.pt" in err


def test_a_format_1_bundle_is_guarded_too(tmp_path: Path) -> None:
    """--method frsf contradicts the method fa_mlp.pt records; a bundle that records frsf over
    a signed B (fa_mlp's) is refused for its negative entries."""
    code, _, err = run("run", SAMPLES / "fa_mlp.pt", "--method", "frsf", "--max-samples", "64")
    assert code == ExitCode.INPUT_ERROR and "trained with 'fa', but --method 'frsf'" in err
    bundle = load_sample("fa_mlp")
    bundle["method"] = "frsf"
    torch.save(bundle, tmp_path / "signed.pt")
    code, _, err = run("run", tmp_path / "signed.pt", "--data", SAMPLES / "eval.safetensors", "--max-samples", "64")
    assert code == ExitCode.INPUT_ERROR and "negative entries" in err and "signed.pt" in err


def test_biotorch_dfa_matrix_feeds_the_layer_input(tmp_path: Path) -> None:
    """BioTorch's DFA layer l holds [classes, in_features], applied at its input: the credit at
    h_l is layer l+1's matrix. Read as layer l's own, it would be the wrong matrix."""
    state = _weights()
    for i, name in enumerate(LAYERS):
        state[f"{name}.weight_backward"] = _rand(10, state[f"{name}.weight"].shape[1], seed=10 + i)
        state[f"{name}.bias_backward"] = _rand(10, state[f"{name}.weight"].shape[1], seed=20 + i)
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "dfa.pt")
    report = audit_cli(tmp_path / "dfa.pt")  # the shapes fix the method: no --method
    assert report["method"] == "dfa_layers"  # BioTorch's dfa: e·B at each layer's input, walked back
    readers = [state[f"{n}.weight_backward"] for n in LAYERS[1:]]
    assert cosines(report) == pytest.approx(reference_direct(SAMPLE["state_dict"], readers), abs=TOL)
    own = [state[f"{n}.weight_backward"] for n in LAYERS[1:4]]  # h_l keyed by layer l's own matrix
    wrong = reference_direct(SAMPLE["state_dict"], [readers[0], *own])
    assert cosines(report)[1:] != pytest.approx(wrong[1:], abs=0.01)
    assert report["loading"]["feedback_sources"]["layers.1"] == "layers.1.weight_backward"  # type: ignore[index]


@pytest.mark.parametrize("method", ["usf", "sign_symmetry"])
def test_sign_methods_derive_b_from_the_weights(method: str, tmp_path: Path) -> None:
    state, _ = biotorch_fa_state("usf")
    torch.save(state, tmp_path / "usf.pt")
    report = audit_cli(tmp_path / "usf.pt", "--method", method)
    signs = {n: torch.sign(SAMPLE["state_dict"][f"{n}.weight"]) for n in LAYERS}
    assert cosines(report) == pytest.approx(reference_fa(SAMPLE["state_dict"], signs), abs=TOL)
    assert all(layer["refused"] is None for layer in report["layers"])  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("kind", "says"),
    [("fa", "a feedback-alignment B, which --method sign_symmetry would ignore; pass --method fa"),
     ("frsf", "sign_symmetry_random_magnitude's |M| (B = |M| · sign(W)); pass --method frsf")],
)  # fmt: skip
def test_sign_symmetry_refuses_stored_feedback_it_would_ignore(kind: str, says: str, tmp_path: Path) -> None:
    """sign_symmetry derives B = sign(W); a file that stores a B or magnitudes |M| was trained with
    them (the sign-symmetry code's feedback_alignment or sign_symmetry_random_magnitude): reading it
    as sign_symmetry gave a Γ 0.03–0.2 off, silently. Now one sentence names the method to pass."""
    state, _ = biotorch_fa_state(kind)
    torch.save(state, tmp_path / "stored.pt")
    code, _, err = run("run", tmp_path / "stored.pt", "--arch", "mlp", "--arch-config", CONFIG, "--data",
                       SAMPLES / "eval.safetensors", "--method", "sign_symmetry")  # fmt: skip
    assert code == ExitCode.INPUT_ERROR and says in err and len(err.strip().splitlines()) == 1


# --- DRTP reference code ----------------------------------------------------------------

DRTP_RENAMES = ["--rename", r"^layers\.4\.fc\.=head.", "--rename", r"^layers\.(\d+)\.fc\.=layers.\1."]


def drtp_state(fa: bool) -> dict[str, torch.Tensor]:
    """NetworkBuilder's keys: layers.{i} FC_blocks, the last one the output layer (no hook)."""
    state: dict[str, torch.Tensor] = {}
    for i, name in enumerate(LAYERS):
        inner = "fc.module" if fa else "fc"
        for part in ("weight", "bias"):
            state[f"layers.{i}.{inner}.{part}"] = SAMPLE["state_dict"][f"{name}.{part}"]
        if fa:
            state[f"layers.{i}.fc.fixed_fb_weights"] = _rand(*SAMPLE["state_dict"][f"{name}.weight"].shape, seed=i)
        elif name != "head":
            state[f"layers.{i}.hook.fixed_fb_weights"] = _rand(10, 64, seed=30 + i)
    return state


@pytest.mark.parametrize("loss", ["cross_entropy", "bce"])
@pytest.mark.parametrize("method", ["dfa", "sdfa", "drtp"])
def test_drtp_code_direct_methods(method: str, loss: str, tmp_path: Path) -> None:
    """As the DRTP code trains them: with CE, or with its default BCE on one-hot rows, which the eval
    set's integer labels become (`--loss bce`): the DFA error is then σ − onehot, sDFA projects its
    signs, and every credit is measured against BCE's gradient."""
    state = drtp_state(fa=False)
    torch.save({"model_state_dict": state, "optimizer_state_dict": {"state": {}}, "epoch": 7}, tmp_path / "net.t7")
    report = audit_cli(tmp_path / "net.t7", "--method", method, "--loss", loss, *DRTP_RENAMES)
    per_hidden = [state[f"layers.{i}.hook.fixed_fb_weights"] for i in range(4)]
    kind = {"target": method == "drtp", "sign": method == "sdfa", "loss": loss}
    want = reference_direct(SAMPLE["state_dict"], per_hidden, **kind)  # type: ignore[arg-type]
    assert cosines(report) == pytest.approx(want, abs=TOL)
    if method == "sdfa":  # another credit than DFA's, the one the sDFA net trained with
        dfa = reference_direct(SAMPLE["state_dict"], per_hidden, loss=loss)
        assert max(abs(a - b) for a, b in zip(want, dfa, strict=True)) > 0.01
    errors = reference_direct(SAMPLE["state_dict"], per_hidden, stat=_cos_se, **kind)  # type: ignore[arg-type]
    assert [layer["cos_se"] for layer in report["layers"]] == pytest.approx(errors, rel=1e-3)  # type: ignore[index, union-attr]
    layers: list[dict[str, object]] = report["layers"]  # type: ignore[assignment]
    assert all(la["null_draws"] is None and la["null_std_range"] for la in layers)  # closed-form null
    assert report["loading"]["renames"] == [r"^layers\.4\.fc\.=head.", r"^layers\.(\d+)\.fc\.=layers.\1."]  # type: ignore[index]


def test_drtp_code_fa_wrapper(tmp_path: Path) -> None:
    state = drtp_state(fa=True)
    torch.save(state, tmp_path / "fa.pt")
    report = audit_cli(tmp_path / "fa.pt", *DRTP_RENAMES)  # the FA wrapper fixes the method
    used = {n: state[f"layers.{i}.fc.fixed_fb_weights"] for i, n in enumerate(LAYERS)}
    assert report["method"] == "fa"
    assert cosines(report) == pytest.approx(reference_fa(SAMPLE["state_dict"], used), abs=TOL)


# --- one-entry conventions, TinyDFA -------------------------------------------------------


@pytest.mark.parametrize(("suffix", "method"), [("feedback_weight", "fa"), ("weight_fa", "kp")])
def test_layer_feedback_beside_the_weight(suffix: str, method: str, tmp_path: Path) -> None:
    state, used = _weights(), {}
    for i, name in enumerate(LAYERS):
        used[name] = state[f"{name}.{suffix}"] = _rand(*state[f"{name}.weight"].shape, seed=40 + i)
    torch.save(state, tmp_path / "ss.pt")
    report = audit_cli(tmp_path / "ss.pt", "--method", method)
    assert cosines(report) == pytest.approx(reference_fa(SAMPLE["state_dict"], used), abs=TOL)


def test_dkp_gist_modules(tmp_path: Path) -> None:
    state = _weights()
    per_hidden = [_rand(10, 64, seed=50 + i) for i in range(4)]
    for i, b in enumerate(per_hidden):
        state[f"layers.{i}_dfa.backward_weights"] = b
    torch.save(state, tmp_path / "dkp.pt")
    report = audit_cli(tmp_path / "dkp.pt")
    assert cosines(report) == pytest.approx(reference_direct(SAMPLE["state_dict"], per_hidden), abs=TOL)


def test_tinydfa_one_matrix_sliced_per_layer(tmp_path: Path) -> None:
    torch.save(_weights(), tmp_path / "tiny.pt")
    matrix = _rand(10, 80, seed=60)  # S = 80 > every hidden width
    torch.save(matrix, tmp_path / "feedback.pt")
    refused = audit_cli(tmp_path / "tiny.pt", "--method", "dfa")
    assert all(la["cos"] is None for la in refused["layers"])  # type: ignore[union-attr]
    assert "torch.save(dfa.feedback_matrix" in refused["layers"][0]["refused"]  # type: ignore[index]
    report = audit_cli(
        tmp_path / "tiny.pt", "--method", "dfa", "--feedback", str(tmp_path / "feedback.pt"), "--convention", "tinydfa"
    )
    per_hidden = [matrix[:, :64] / math.sqrt(80)] * 4
    assert cosines(report) == pytest.approx(reference_direct(SAMPLE["state_dict"], per_hidden), abs=TOL)


# --- containers and prefixes --------------------------------------------------------------

FA_FEEDBACK: dict[str, torch.Tensor] = SAMPLE["feedback"]
CONTAINERS: dict[str, tuple[str, Callable[[], object], list[str]]] = {
    "lightning": (
        "epoch=3.ckpt",
        lambda: {
            "epoch": 3,
            "global_step": 90,
            "state_dict": {f"model.{k}": v for k, v in SAMPLE["state_dict"].items()},
            "optimizer_states": [{}],
            "feedback": FA_FEEDBACK,
        },
        [],
    ),
    "torch.compile prefix, bare": (
        "bare.bin",
        lambda: {f"_orig_mod.{k}": v for k, v in SAMPLE["state_dict"].items()},
        ["--feedback", "FEEDBACK_FILE"],
    ),
    "list of B beside the model": (
        "run.pt",
        lambda: {"model": SAMPLE["state_dict"], "B": [FA_FEEDBACK[n] for n in LAYERS], "epoch": 30},
        [],
    ),
    "two state dicts, one picked": (
        "nerf.ckpt",
        lambda: {
            "iter": 5,
            "model_coarse_state_dict": {},
            "model_fine_state_dict": SAMPLE["state_dict"],
            "fb": FA_FEEDBACK,
            "optimizer_state_dict": {},
        },
        ["--state-dict-key", "model_fine_state_dict"],
    ),
    "feedback under its own key": (
        "x.pth",
        lambda: {"net": SAMPLE["state_dict"], "matrices": FA_FEEDBACK},
        ["--feedback-key", "matrices"],
    ),
}


@pytest.mark.parametrize("layout", CONTAINERS)
def test_containers_give_the_format_1_numbers(layout: str, tmp_path: Path) -> None:
    name, build, flags = CONTAINERS[layout]
    torch.save(build(), tmp_path / name)
    torch.save(FA_FEEDBACK, tmp_path / "feedback.pt")
    flags = [str(tmp_path / "feedback.pt") if f == "FEEDBACK_FILE" else f for f in flags]
    report = audit_cli(tmp_path / name, "--method", "fa", *flags)
    expected = reference_fa(SAMPLE["state_dict"], FA_FEEDBACK)
    assert cosines(report) == pytest.approx(expected, abs=TOL)


def test_several_state_dicts_ask_which(tmp_path: Path) -> None:
    torch.save(
        {"model_coarse_state_dict": SAMPLE["state_dict"], "model_fine_state_dict": SAMPLE["state_dict"]},
        tmp_path / "n.ckpt",
    )
    code, _, err = run("run", tmp_path / "n.ckpt", "--arch", "mlp", "--arch-config", CONFIG, "--method", "fa", *DATA)
    assert code == ExitCode.INPUT_ERROR and "--state-dict-key" in err and "model_fine_state_dict" in err


def test_unused_tensor_list_is_named(tmp_path: Path) -> None:
    torch.save({"model": SAMPLE["state_dict"], "feedback": FA_FEEDBACK, "ema": [torch.zeros(2)]}, tmp_path / "r.pt")
    report = audit_cli(tmp_path / "r.pt", "--method", "fa")
    assert any("'ema'" in note and "not used" in note for note in report["notes"])  # type: ignore[union-attr]


def test_whole_model_pickle_gives_the_line_that_resaves_it(tmp_path: Path) -> None:
    from model_adapters.mlp import MLP

    model = MLP(24, 64, 4, 10)
    torch.save(model, tmp_path / "whole.pt")
    code, _, err = run("run", tmp_path / "whole.pt", "--arch", "mlp", "--arch-config", CONFIG, "--method", "fa", *DATA)
    assert code == ExitCode.INPUT_ERROR
    assert ".state_dict()" in err and len(err.strip().splitlines()) == 1


def test_biotorch_dfa_convolutions_and_a_flattening_head(tmp_path: Path) -> None:
    """BioTorch's DFA Conv2d keeps [classes, C_in, kh, kw] and sends conv2d_input of the
    error broadcast over its output map to its input; its head reads h.flatten(1)."""
    from torch.nn.grad import conv2d_input

    from model_adapters import get_adapter

    config = {"in_channels": 1, "image_size": 8, "width": 4, "depth": 3, "num_classes": 10}
    model = get_adapter("small_cnn").build(config, seed=0).module.eval()
    state = dict(model.state_dict())
    b = {f"stages.{i}.0": _rand(10, 1 if i == 0 else 4, 3, 3, seed=70 + i) for i in range(3)} | {
        "head": _rand(10, 4 * 64, seed=73)
    }
    state |= {f"{name}.weight_backward": v for name, v in b.items()}
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "cnn.pt")
    images = {"x": torch.randn(N, 1, 8, 8, generator=torch.Generator().manual_seed(1)), "y": Y}
    from safetensors.torch import save_file

    save_file(images, tmp_path / "img.safetensors")
    code, out, err = run(
        "run", tmp_path / "cnn.pt", "--arch", "small_cnn", "--arch-config", json.dumps(config),
        "--data", tmp_path / "img.safetensors", "--json", "-",
    )  # fmt: skip
    assert code in (0, 1, 3), err
    report = json.loads(out)

    net = model.double()
    x = images["x"].double()
    h0 = net.stages[0](x)
    h1 = net.stages[1](h0)
    h2 = net.stages[2](h1)
    logits = net.head(h2.flatten(1))
    true = torch.autograd.grad(torch.nn.functional.cross_entropy(logits, Y, reduction="sum"), [h0, h1, h2])
    e = (logits.softmax(-1) - torch.nn.functional.one_hot(Y, 10).double()).detach()
    broadcast = e[:, :, None, None].expand(N, 10, 8, 8)  # BioTorch's out_grad: e repeated over the map
    credit = [
        conv2d_input(h0.shape, b["stages.1.0"].double(), broadcast, padding=1),
        conv2d_input(h1.shape, b["stages.2.0"].double(), broadcast, padding=1),
        e @ b["head"].double(),
    ]
    want = [_mean_cos(c.flatten(1), g.flatten(1)) for c, g in zip(credit, true, strict=True)]
    assert cosines(report) == pytest.approx(want, abs=2e-5)
    assert report["loading"]["feedback_sources"]["stages.1.0"] == "stages.1.0.weight_backward"


def test_rename_applies_to_the_keys_of_a_feedback_file_too(tmp_path: Path) -> None:
    """A user's own module names, in the weights and in the --feedback file beside them."""
    state = {k.replace("layers.", "blk."): v for k, v in _weights().items()}
    feedback = {k.replace("layers.", "blk."): v.contiguous() for k, v in SAMPLE["feedback"].items()}
    torch.save(state, tmp_path / "net.pt")
    save_file(feedback, str(tmp_path / "b.safetensors"))
    report = audit_cli(tmp_path / "net.pt", "--method", "fa", "--feedback", tmp_path / "b.safetensors",
                       "--rename", r"^blk\.=layers.")  # fmt: skip
    want = reference_fa(SAMPLE["state_dict"], dict(SAMPLE["feedback"]))
    assert cosines(report) == pytest.approx(want, abs=TOL)


def test_entries_of_two_libraries_are_refused(tmp_path: Path) -> None:
    """BioTorch's weight_backward beside a weight_fa: which B to audit cannot be told."""
    state, _ = biotorch_fa_state("fa")
    state["module.layers.0.weight_fa"] = state["module.layers.0.weight_backward"].clone()
    torch.save(state, tmp_path / "two.pt")
    code, _, err = run("run", tmp_path / "two.pt", "--arch", "mlp", "--arch-config", CONFIG, "--method", "fa", *DATA)
    assert code == ExitCode.INPUT_ERROR and "more than one library's convention: biotorch" in err and "weight_fa" in err
