"""Round 4 of hostile inputs: what a file may not set for itself."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

import fa_audit
from fa_audit import ExitCode, InputError, audit_module
from fa_audit.conventions.twin import _REGISTERED
from fa_audit.loading import load_bundle

from .cli_runner import run
from .conftest import SAMPLES, user_module

FAST = "depth_utility: {baseline: {epochs: 1}}\n"


def test_the_fitted_baseline_budget_is_never_the_files(tmp_path: Path) -> None:
    """frozen.pt relabelled bp, with meta.epochs 0 (and a learning rate of 0): its fitted baseline
    was left untrained (0.09) and the file got TRUST. The budget is the tool's (the config's):
    the baseline trains, the margin is that of a frozen net over its own kind, and a note says so."""
    frozen = load_bundle(SAMPLES / "frozen.pt")
    model = fa_audit.api.build_model(frozen).module
    meta = {**frozen.meta, "data": "eval.safetensors", "train_data": "train.safetensors", "epochs": 0, "lr": 0.0}
    for name in ("eval.safetensors", "train.safetensors"):
        (tmp_path / name).write_bytes((SAMPLES / name).read_bytes())
    fa_audit.save_bundle(tmp_path / "forged.pt", model, arch=frozen.arch, arch_config=frozen.arch_config,
                         method="bp", meta=meta)  # fmt: skip
    (tmp_path / "fast.yaml").write_text(FAST)
    code, out, err = run("run", tmp_path / "forged.pt", "--fit-baseline", "--no-cache", "--config",
                         tmp_path / "fast.yaml", "--max-samples", "1024", "--no-color")  # fmt: skip
    assert code != ExitCode.TRUST, out + err
    said = " ".join(out.split())
    assert "meta names training settings (epochs, lr), which the fitted baseline does not take" in said


class _WithFa(torch.nn.Module):
    def __init__(self, layer: torch.nn.Module) -> None:
        super().__init__()
        self.embed, self.blocks, self.head = torch.nn.Linear(8, 8), torch.nn.ModuleList([layer]), torch.nn.Linear(8, 3)

    def forward(self, x: torch.Tensor, return_hidden: bool = False) -> object:
        h0 = self.embed(x)
        h1 = self.blocks[0](h0)
        return (self.head(h1), [h0, h1]) if return_hidden else self.head(h1)


def _holding_fa(layer: torch.nn.Module) -> torch.nn.Module:
    layer.weight_fa = torch.nn.Parameter(torch.randn_like(layer.weight), requires_grad=False)  # type: ignore[union-attr]
    return layer


class _Registered(torch.nn.Linear):
    pass


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda: _WithFa(_holding_fa(torch.nn.LayerNorm(8))), "blocks.0: cannot make a layer of LayerNorm plain"),
        (lambda: _WithFa(_holding_fa(torch.nn.ConvTranspose1d(8, 8, 1))), "it is a transposed convolution"),
    ],
)
def test_layers_no_twin_can_stand_for_are_refused_named(make: Any, says: str) -> None:
    x, y = torch.randn(16, 8), torch.randint(0, 3, (16,))
    with pytest.raises(InputError, match=says):
        audit_module(make(), [(x, y)], method="bp", device="cpu")


@pytest.mark.parametrize(("to_plain", "says"), [(lambda m: 1 / 0, "raised ZeroDivisionError"),
                                                (lambda m: "plain", "returned a str")])  # fmt: skip
def test_a_register_plain_function_that_fails_is_an_input_error(to_plain: Any, says: str) -> None:
    fa_audit.register_plain(_Registered, to_plain)
    try:
        x, y = torch.randn(16, 8), torch.randint(0, 3, (16,))
        with pytest.raises(InputError, match=says):
            audit_module(_WithFa(_Registered(8, 8)), [(x, y)], method="bp", device="cpu")
    finally:
        _REGISTERED.pop(_Registered, None)


def test_sparse_batches_are_refused() -> None:
    x, y = torch.randn(16, 8).to_sparse(), torch.randint(0, 3, (16,))
    with pytest.raises(InputError, match="must be dense tensors"):
        audit_module(_WithFa(torch.nn.Linear(8, 8)), [(x, y)], method="bp", device="cpu")


def test_two_architectures_on_one_eval_set_are_an_input_error() -> None:
    """Refused before B runs on A's eval data (which B cannot even take), naming both networks and the data."""
    code, out, err = run("compare", SAMPLES / "dfa.pt", SAMPLES / "small_cnn_dfa.pt")
    assert code == ExitCode.INPUT_ERROR and out == "" and len(err.strip().splitlines()) == 1, err
    assert "dfa.pt: resmlp) and B (" in err and "small_cnn_dfa.pt: small_cnn) are different networks" in err
    assert "audited on A's eval data (" in err and "eval.safetensors)" in err


def test_eval_data_a_hooked_model_cannot_take_is_named() -> None:
    """The conv net's hidden states are found by hooks in a first forward, which the 24-d vectors fail."""
    code, _, err = run("run", SAMPLES / "small_cnn_dfa.pt", "--data", SAMPLES / "eval.safetensors")
    assert code == ExitCode.INPUT_ERROR and len(err.strip().splitlines()) == 1, err
    assert "eval.safetensors: x has per-sample shape [24], which the model cannot take" in err


def test_a_batch_a_built_in_model_cannot_take_is_named() -> None:
    """--batch-dim 1 on the batch-first LM: its one-sample probe goes through ([64, 1]), a batch of
    256 sequences does not ([64, 256]: 256 positions): the fuzzer's find, an internal error before."""
    code, out, err = run("run", SAMPLES / "gpt_mini_dfa.pt", "--batch-dim", "1", "--json", "-")
    assert code == ExitCode.INPUT_ERROR and out == "" and len(err.strip().splitlines()) == 1, err
    assert "lm_eval.safetensors: the batch of 256 samples from sample 0 cannot go through the model" in err
    assert "T <= 64, not [64, 256]); --batch-dim 1 gives it x's samples along that dimension" in err


def test_two_architectures_that_take_one_eval_set_are_not_compared_row_by_row() -> None:
    """dfa.pt (resmlp) against fa_mlp.pt (mlp): both take the 24-d inputs, and B's layers were
    shown under A's module names with "no regression", exit 0."""
    code, out, err = run("compare", SAMPLES / "dfa.pt", SAMPLES / "fa_mlp.pt", "--max-samples", "256")
    assert code == ExitCode.INPUT_ERROR and out == "" and len(err.strip().splitlines()) == 1, out + err
    assert "dfa.pt: resmlp) and B (" in err and "fa_mlp.pt: mlp) are different networks" in err


def test_meta_nested_too_deep_is_refused(tmp_path: Path) -> None:
    bundle = load_bundle(SAMPLES / "bp.pt")
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(5000):
        node["a"] = {}
        node = node["a"]
    saved = {"fa_audit_format": 1, "arch": bundle.arch, "arch_config": bundle.arch_config, "method": "bp",
             "state_dict": bundle.state_dict, "meta": {"deep": deep}}  # fmt: skip
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(50_000)  # what the attacker's own torch.save needs
    try:
        torch.save(saved, tmp_path / "deep.pt")
    finally:
        sys.setrecursionlimit(limit)
    code, _, err = run("run", tmp_path / "deep.pt", "--data", SAMPLES / "eval.safetensors")
    assert code == ExitCode.INPUT_ERROR and "nested more than 32 levels" in err
    tensors = {f"model.{k}": v.contiguous() for k, v in bundle.state_dict.items()}
    metadata = {"fa_audit_format": "1", "arch": bundle.arch, "arch_config": json.dumps(bundle.arch_config),
                "method": "bp", "meta": "[" * 100_000 + "]" * 100_000}  # fmt: skip
    save_file(tensors, str(tmp_path / "deep.safetensors"), metadata=metadata)
    code, _, err = run("run", tmp_path / "deep.safetensors", "--data", SAMPLES / "eval.safetensors")
    assert code == ExitCode.INPUT_ERROR and "metadata 'meta'" in err


def test_a_file_name_that_is_not_utf8_is_escaped_in_every_format(tmp_path: Path) -> None:
    name = os.fsdecode(b"run-\xff.pt")
    (tmp_path / name).write_bytes((SAMPLES / "dfa.pt").read_bytes())
    for flags in (["--markdown", "-"], ["--format", "github"]):
        code, out, err = run("run", tmp_path / name, "--data", SAMPLES / "eval.safetensors", *flags)
        assert code == ExitCode.WALK_BACK, err
        assert "\\udcff" in out


def test_null_settings_cannot_make_the_audit_unbounded(tmp_path: Path) -> None:
    """draws: 1000 over every sample, max_draws: 100000: a 63-byte YAML that ran for hours. The
    null's draws × samples stay within 100 times the eval samples (or 400,000), and a note says so."""
    (tmp_path / "many.yaml").write_text("null_calibration: {draws: 1000, samples: 0, max_draws: 100000}\n")
    code, out, err = run("run", SAMPLES / "dfa.pt", "--config", tmp_path / "many.yaml", "--max-samples", "512",
                         "--json", "-")  # fmt: skip
    assert code == ExitCode.WALK_BACK, err
    report = json.loads(out)
    draws, most = report["config"]["null_calibration"]["draws"], report["config"]["null_calibration"]["max_draws"]
    assert draws * 512 <= 400_000 and most * 512 <= 400_000
    assert any(n.startswith(f"null draws capped at {draws}") for n in report["notes"])
    assert all((layer["null_draws"] or 0) <= most for layer in report["layers"])


def test_a_users_model_that_says_an_input_does_not_fit_keeps_its_word(tmp_path: Path) -> None:
    """InputShapeError raised in a user's (or a third-party adapter's) own forward is not rewritten as
    the model's forward failing: it says what it is, and the pass names the data with it."""
    from model_adapters.base import InputShapeError, users_forward

    made = user_module(
        tmp_path,
        "fits_user",
        "import torch\nfrom model_adapters.base import InputShapeError\n\n"
        "class Net(torch.nn.Module):\n"
        "    def forward(self, x):\n"
        "        raise InputShapeError(f'takes at most 8 features, not {x.shape[1]}')\n",
    )
    net = made.Net()
    with pytest.raises(InputShapeError, match="at most 8 features"), users_forward(net, torch.zeros(2, 9)):
        net(torch.zeros(2, 9))


def test_a_batch_dim_that_names_the_wrong_axis_is_said_so() -> None:
    """Square batches ([64, 64]) go through gpt_mini with --batch-dim 1, positions taken for samples:
    the reference proof fails, and with no module to blame the sentence names the declared axis."""
    code, out, err = run("run", SAMPLES / "gpt_mini_dfa.pt", "--batch-dim", "1", "--max-samples", "64", "--json", "-")
    assert code == ExitCode.INPUT_ERROR and out == "" and len(err.strip().splitlines()) == 1, err
    assert "no module replaces its backward: with --batch-dim 1 the likeliest cause is that dimension 1" in err
    assert "register_plain" not in err
