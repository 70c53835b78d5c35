"""TinyDFA's own code (tests/third_party: the library and its transformer language model, as
published): networks trained by it, saved as its scripts save them, audited as the docs say,
and every cosine checked against a float64 computation of TinyDFA's own backward.

The transformer is sequence-first ([T, N, ...], ``DFA(batch_dims=(0, 1))``), keeps its feedback
points in plain lists, and places its DFA module before the output layer (``dfa_after_vocab``
off, as in every run of its paper): the error it projects is the gradient below the output
layer, one matrix shared by every position."""

from __future__ import annotations

import json
import math
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.nn import functional as F

from fa_audit import audit_module
from fa_audit.errors import InputError
from model_adapters.base import graph_free_copy

from .cli_runner import run
from .conftest import SAMPLES

THIRD_PARTY = Path(__file__).parent / "third_party"
VOCAB, SEQUENCES = 256, 48
SMALL = {"vocab_size": VOCAB, "d_model": 32, "n_heads": 2, "dim_feedforward": 48, "n_layers": 2}
CONFIGS = {
    "simple": {**SMALL, "n_layers": 3, "dfa": "simple"},
    "full": {**SMALL, "dfa": "full"},
    "after_vocab": {**SMALL, "dfa": "simple", "dfa_after_vocab": True},
    "embed": {**SMALL, "dfa": "simple", "dfa_embed": True},
}
HIDDEN = {
    "simple": "transformer_encoder.layers.*",
    "after_vocab": "transformer_encoder.layers.*",
    # the embedding's point is embedding(x)·√d, no module's output: the embedding's is the same direction
    "embed": "embedding,transformer_encoder.layers.*",
    "full": "transformer_encoder.layers.*.norm1,transformer_encoder.layers.*.dropout,transformer_encoder.layers.*",
}
TOL = 1e-4
"""Float32 kernels against float64, on cosines of sequences of 64 tokens."""


MLP = """
import torch
import torch.nn as nn

from tinydfa import DFA, DFALayer, FeedbackPointsHandling


class MLP(nn.Module):
    \"\"\"TinyDFA's mnist_example.py network, for 24 inputs and ``outputs`` outputs.\"\"\"

    def __init__(self, hidden_size=64, outputs=10):
        super().__init__()
        self.fc1 = nn.Linear(24, hidden_size)
        self.fc2 = nn.Linear(hidden_size, hidden_size)
        self.fc3 = nn.Linear(hidden_size, outputs)
        self.dfa1, self.dfa2 = DFALayer(), DFALayer()
        self.dfa = DFA([self.dfa1, self.dfa2], feedback_points_handling=FeedbackPointsHandling.LAST)

    def forward(self, x):
        x = x.reshape(x.shape[0], -1)
        x = self.dfa1(torch.relu(self.fc1(x)))
        x = self.dfa2(torch.relu(self.fc2(x)))
        return self.dfa(self.fc3(x))
"""
MLP_TASKS = {  # task: (data files, outputs, loss head, torch's loss)
    "classification": ("eval", "train", 10, "cross_entropy", F.cross_entropy),
    "regression": ("regression_eval", "regression_train", 4, "mse", F.mse_loss),
}


@pytest.fixture(scope="module")
def code(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, ModuleType]]:
    """A folder holding TinyDFA and its transformer as a user has them, importable; the module."""
    folder = tmp_path_factory.mktemp("tinydfa_user")
    shutil.copytree(THIRD_PARTY / "tinydfa", folder / "tinydfa")
    for name in ("transformer.py", "attention.py"):
        shutil.copy(THIRD_PARTY / "tinydfa_lm" / name, folder / name)
    (folder / "tinydfa_mlp.py").write_text(MLP)
    sys.path.insert(0, str(folder))
    import transformer

    yield folder, transformer
    sys.path.remove(str(folder))
    for name in ("transformer", "attention", "tinydfa_mlp", "tinydfa", "tinydfa.dfa", "tinydfa.utils"):
        sys.modules.pop(name, None)


def _eval() -> tuple[torch.Tensor, torch.Tensor]:
    data = load_file(SAMPLES / "lm_eval.safetensors")
    return data["x"][:SEQUENCES], data["y"][:SEQUENCES]


def _train(transformer: ModuleType, kind: str, steps: int = 25) -> Any:
    """TinyDFA's ``utils.run_epoch``: sequence-first batches, one cross-entropy over every token."""
    torch.manual_seed(3)
    model = transformer.LMTransformer(**CONFIGS[kind])
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    text = torch.tensor(list((SAMPLES / "lm_text.txt").read_bytes()[:20000]))
    starts = torch.randint(0, len(text) - 65, (steps, 16))
    model.train()
    for rows in starts:
        window = torch.stack([text[s : s + 65] for s in rows.tolist()]).T  # [T + 1, N]
        optimizer.zero_grad()
        output = model(window[:-1])
        F.cross_entropy(output.view(-1, VOCAB), window[1:].reshape(-1)).backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def trained(code: tuple[Path, ModuleType]) -> dict[str, Any]:
    """Each kind trained and saved as ``train_lm.py`` saves it, its matrix beside it."""
    folder, transformer = code
    models = {}
    for kind in CONFIGS:
        model = _train(transformer, kind)
        torch.save({"model": model.state_dict(), "optim": {}, "epoch": 1, "step": 25}, folder / f"{kind}_1.pt")
        torch.save(model.dfa.feedback_matrix, folder / f"{kind}_feedback.pt")
        models[kind] = model
    x, y = _eval()
    save_file({"x": x, "y": y}, folder / "eval.safetensors")
    return models


def _float64_cosines(model: Any, names: list[str]) -> list[float]:
    """Per layer, the mean over sequences of cos(credit, gradient), from TinyDFA's own code in
    float64: its passthrough switch gives backprop, and the credit at a feedback point of width w
    is its DFA module's: the gradient at the DFA's input times M[:, :w] / sqrt(S), per position."""
    net = graph_free_copy(model).double()
    net.src_mask = net._generate_square_subsequent_mask(64).double()  # it makes its mask in float32
    for point in net.dfa.dfa_layers:
        point.passthrough = True
    net.dfa.no_training = True
    x, y = _eval()
    modules = dict(net.named_modules())
    states: list[torch.Tensor] = []
    handles = [modules[n].register_forward_hook(lambda mod, args, out: states.append(out)) for n in names]
    inputs: list[torch.Tensor] = []
    handles.append(net.dfa.register_forward_pre_hook(lambda mod, args: inputs.append(args[0])))
    logits = net(x.T)  # [T, N, V]
    for handle in handles:
        handle.remove()
    assert len(states) == len(names)
    per_sequence = F.cross_entropy(logits.permute(1, 2, 0), y, reduction="none").mean(1)
    grads = torch.autograd.grad(per_sequence.sum(), [*states, inputs[0]])
    delta = grads[-1]  # [T, N, D]: what TinyDFA's DFA projects
    matrix = model.dfa.feedback_matrix.double()
    out = []
    for g in grads[:-1]:
        credit = delta @ matrix[:, : g.shape[-1]] / math.sqrt(matrix.shape[1])
        c, r = credit.transpose(0, 1).flatten(1), g.transpose(0, 1).flatten(1)
        out.append(float(((c * r).sum(1) / (c.norm(dim=1) * r.norm(dim=1))).mean()))
    return out


def _cli(folder: Path, kind: str, *extra: object) -> tuple[int, str, str]:
    return run(
        "run", folder / f"{kind}_1.pt", "--arch", "module:transformer:LMTransformer",
        "--arch-config", json.dumps(CONFIGS[kind]), "--hidden", HIDDEN[kind], "--batch-dim", 1,
        "--method", "dfa", "--feedback", folder / f"{kind}_feedback.pt", "--convention", "tinydfa",
        "--loss", "token_cross_entropy", "--data", folder / "eval.safetensors", "--baseline-accuracy", 0.05,
        "--device", "cpu", "--batch-size", 16, *extra,
    )  # fmt: skip


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_the_transformer_lm_audits_as_saved_within_float64(
    code: tuple[Path, ModuleType], trained: dict[str, Any], kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, _ = code
    monkeypatch.chdir(folder)
    status, out, err = _cli(folder, kind, "--json", "-")
    assert status in (0, 1, 3), err
    report = json.loads(out)
    model = trained[kind]
    names = [layer["module"] for layer in report["layers"]]
    expected = _float64_cosines(model, names)
    assert [layer["cos"] for layer in report["layers"]] == pytest.approx(expected, abs=TOL)
    assert report["loading"]["batch_dim"] == 1
    if kind == "after_vocab":  # the DFA wraps the logits: the output error, exact in float64
        assert "error_point" not in report["loading"]
    else:  # before the output layer: the gradient there
        assert report["loading"]["error_point"] == "dfa"
    per_layer = 3 if kind == "full" else 1
    assert len(names) == per_layer * CONFIGS[kind]["n_layers"] + (kind == "embed")
    d_model, dff = CONFIGS[kind]["d_model"], CONFIGS[kind]["dim_feedforward"]
    size = max(d_model, dff) if kind == "full" else d_model
    assert report["loading"]["feedback_sources"][names[0]] == f"feedback_matrix[:, :{d_model}] / sqrt({size})"


def test_the_live_model_gives_the_same_numbers(
    code: tuple[Path, ModuleType], trained: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """audit_module on the model in memory: TinyDFA's matrix read off its DFA module."""
    folder, _ = code
    monkeypatch.chdir(folder)
    x, y = _eval()
    report = audit_module(
        trained["simple"], [(x[i : i + 16], y[i : i + 16]) for i in range(0, SEQUENCES, 16)], method="dfa",
        hidden=[HIDDEN["simple"]], batch_dim=1, loss="token_cross_entropy", baseline_accuracy=0.05, device="cpu",
    )  # fmt: skip
    status, out, err = _cli(folder, "simple", "--json", "-")
    assert status in (0, 1, 3), err
    from_file = json.loads(out)
    assert [la.cos for la in report.measurements.layers] == pytest.approx(
        [la["cos"] for la in from_file["layers"]], abs=1e-9
    )


def test_sequence_first_data_without_the_declared_dimension_is_not_audited(
    code: tuple[Path, ModuleType], trained: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --batch-dim the model reads the sequences as positions: never a number."""
    folder, _ = code
    monkeypatch.chdir(folder)
    status, out, err = run(
        "run", folder / "simple_1.pt", "--arch", "module:transformer:LMTransformer",
        "--arch-config", json.dumps(CONFIGS["simple"]), "--hidden", HIDDEN["simple"], "--method", "dfa",
        "--feedback", folder / "simple_feedback.pt", "--convention", "tinydfa", "--loss", "token_cross_entropy",
        "--data", folder / "eval.safetensors", "--baseline-accuracy", 0.05, "--device", "cpu", "--json", "-",
    )  # fmt: skip
    assert status == 2, (status, out[:300])
    assert err.splitlines()[-1].startswith("fa-audit: error: ") and "Traceback" not in err


def test_an_fa_method_with_a_batch_dimension_is_one_sentence(
    code: tuple[Path, ModuleType], trained: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, _ = code
    monkeypatch.chdir(folder)
    status, _, err = _cli(folder, "simple", "--method", "fa")
    assert status == 2
    assert "--batch-dim 1 audits direct methods" in err


def test_batch_dim_is_checked_as_a_setting() -> None:
    from fa_audit.settings import AuditSettings

    with pytest.raises(InputError, match="batch_dim must be 0, 1, 2 or 3"):
        AuditSettings(batch_dim=True)  # type: ignore[arg-type]


@pytest.mark.parametrize("task", list(MLP_TASKS))
def test_tinydfas_mlp_audits_as_saved_within_float64(
    code: tuple[Path, ModuleType], task: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """TinyDFA's MNIST network, its DFA wrapping the output layer, trained by TinyDFA on the samples'
    classification and regression tasks: every cosine is TinyDFA's backward in float64, and its
    debug prints never reach the report on stdout."""
    folder, _ = code
    monkeypatch.chdir(folder)
    eval_name, train_name, outputs, head, loss = MLP_TASKS[task]
    import tinydfa_mlp  # type: ignore[import-not-found]

    torch.manual_seed(5)
    model = tinydfa_mlp.MLP(outputs=outputs)
    train = load_file(SAMPLES / f"{train_name}.safetensors")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    for i in range(0, 4096, 64):
        optimizer.zero_grad()
        loss(model(train["x"][i : i + 64].float()), train["y"][i : i + 64]).backward()
        optimizer.step()
    torch.save(model.state_dict(), folder / f"mlp_{task}.pt")
    torch.save(model.dfa.feedback_matrix, folder / f"mlp_{task}_feedback.pt")
    capsys.readouterr()
    status, out, err = run(
        "run", folder / f"mlp_{task}.pt", "--arch", "module:tinydfa_mlp:MLP", "--arch-config",
        json.dumps({"outputs": outputs}), "--hidden", "dfa1,dfa2", "--method", "dfa",
        "--feedback", folder / f"mlp_{task}_feedback.pt", "--convention", "tinydfa", "--loss", head,
        "--data", SAMPLES / f"{eval_name}.safetensors", "--max-samples", 512, "--baseline-accuracy", 0.1,
        "--device", "cpu", "--json", "-",
    )  # fmt: skip
    assert status in (0, 1, 3), err
    report = json.loads(out)  # TinyDFA prints its feedback shapes at its first forward: not here
    assert "error_point" not in report["loading"]  # the DFA wraps the output: the output error, in float64
    data = load_file(SAMPLES / f"{eval_name}.safetensors")
    x, y = data["x"][:512].double(), data["y"][:512]
    net = graph_free_copy(model).double()
    for point in net.dfa.dfa_layers:
        point.passthrough = True
    net.dfa.no_training = True
    states: list[torch.Tensor] = []
    for point in (net.dfa1, net.dfa2):
        point.register_forward_hook(lambda mod, args, out: states.append(out))
    out64 = net(x)
    per_sample = loss(out64, y.double() if y.is_floating_point() else y, reduction="none")
    per_sample = per_sample.sum(1) if per_sample.dim() == 2 else per_sample
    e, *grads = torch.autograd.grad(per_sample.sum(), [out64, *states])
    matrix = model.dfa.feedback_matrix.double()
    expected = []
    for g in grads:
        c = e @ matrix[:, : g.shape[1]] / math.sqrt(matrix.shape[1])
        expected.append(float(((c * g).sum(1) / (c.norm(dim=1) * g.norm(dim=1))).mean()))
    assert [layer["cos"] for layer in report["layers"]] == pytest.approx(expected, abs=TOL)


@pytest.mark.parametrize("handling", ["LAST", "MINIBATCH", "REDUCE"])
def test_the_twins_feedback_points_keep_nothing_across_batches(code: tuple[Path, ModuleType], handling: str) -> None:
    """In every handling mode TinyDFA has, the twin's points pass their input through and keep none
    of it (MINIBATCH would append each batch's graph, REDUCE sum them on the DFA module)."""
    from tinydfa import FeedbackPointsHandling  # type: ignore[import-not-found]

    from fa_audit.conventions import plain_twin

    _, transformer = code
    model = transformer.LMTransformer(**CONFIGS["simple"]).eval()
    mode = FeedbackPointsHandling[handling]
    model.dfa.feedback_points_handling = mode
    for point in model.dfa.dfa_layers:
        point.feedback_points_handling = mode
    twin = plain_twin(graph_free_copy(model)).module
    x = _eval()[0][:4].T
    for _ in range(3):
        twin(x).sum().backward()
    points = [p for layer in twin.transformer_encoder.layers for p in layer.dfas]
    assert all(p.passthrough and p.feedback_points is None for p in points)
    assert points[0].feedback_registrar.__self__.global_feedback_point is None  # REDUCE's sum on the DFA module
    assert twin.dfa.__class__.__name__ == "Passthrough"
