"""Every accepted input form reads to the same audit; each wrong one is an InputError."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.optim.swa_utils import AveragedModel

from fa_audit import InputError
from fa_audit.adapt import build_model
from fa_audit.adapt.fit_keys import fit_bundle
from fa_audit.api import audit
from fa_audit.loading import Overrides, load_bundle, load_eval_data
from fa_audit.loading.keys import averaged_counters, subtree_prefixes, unwrapped
from fa_audit.report import AuditReport

from .adapters_fixture import TinyResidual
from .conftest import SAMPLES, load_sample

DFA_CONFIG = json.dumps(load_sample("dfa")["arch_config"])


def cosines(report: AuditReport) -> list[float | None]:
    return [layer.cos for layer in report.measurements.layers]


def test_bare_state_dict_with_arch_flags_and_feedback_file(tmp_path: Path) -> None:
    bundle = load_sample("dfa")
    torch.save(bundle["state_dict"], tmp_path / "bare.pt")
    save_file(bundle["feedback"], tmp_path / "fb.safetensors")
    report = audit(
        tmp_path / "bare.pt",
        data=SAMPLES / "eval.safetensors",
        feedback=tmp_path / "fb.safetensors",
        arch="resmlp",
        arch_config=json.loads(DFA_CONFIG),
        method="dfa",
        max_samples=512,
    )
    reference = audit(SAMPLES / "dfa.pt", max_samples=512)
    assert cosines(report) == cosines(reference)


def test_bare_state_dict_without_flags_says_which_are_needed(tmp_path: Path) -> None:
    torch.save(load_sample("bp")["state_dict"], tmp_path / "bare.pt")
    with pytest.raises(InputError, match="bare state dict; pass --arch and --arch-config"):
        load_bundle(tmp_path / "bare.pt")
    config = load_sample("bp")["arch_config"]
    with pytest.raises(InputError, match="does not say its training method; pass --method"):
        audit(tmp_path / "bare.pt", arch="resmlp", arch_config=config, data=SAMPLES / "eval.safetensors")


def test_sidecar_feedback_is_found_beside_the_checkpoint(tmp_path: Path) -> None:
    bundle = load_sample("dfa_nofeedback")
    torch.save(bundle, tmp_path / "run.pt")
    save_file(load_sample("dfa")["feedback"], tmp_path / "run.feedback.safetensors")
    loaded = load_bundle(tmp_path / "run.pt")
    assert loaded.feedback_path == tmp_path / "run.feedback.safetensors" and set(loaded.feedback) >= {"embed"}


def test_own_feedback_and_a_different_sidecar_are_ambiguous(tmp_path: Path) -> None:
    bundle = load_sample("dfa")
    bundle["meta"]["data"] = str(SAMPLES / "eval.safetensors")
    torch.save(bundle, tmp_path / "run.pt")
    other = {k: v + 1.0 for k, v in bundle["feedback"].items()}
    save_file(other, tmp_path / "run.feedback.safetensors")
    with pytest.raises(InputError, match=r"differ from those in the sidecar run\.feedback\.safetensors"):
        load_bundle(tmp_path / "run.pt")
    chosen = load_bundle(tmp_path / "run.pt", Overrides(feedback=tmp_path / "run.feedback.safetensors"))
    assert torch.equal(chosen.feedback["embed"], other["embed"])
    save_file(bundle["feedback"], tmp_path / "run.feedback.safetensors")  # identical: no ambiguity
    assert torch.equal(load_bundle(tmp_path / "run.pt").feedback["embed"], bundle["feedback"]["embed"])


@pytest.mark.parametrize("suffix", [".npz", ".pt"])
def test_npz_and_pt_eval_data_give_the_same_audit(tmp_path: Path, suffix: str) -> None:
    data = load_file(SAMPLES / "eval.safetensors")
    path = tmp_path / f"eval{suffix}"
    if suffix == ".npz":
        np.savez(path, x=data["x"].numpy(), y=data["y"].numpy())
    else:
        torch.save({"x": data["x"], "y": data["y"]}, path)
    assert load_eval_data(path).samples == 4096
    ours = audit(SAMPLES / "dfa_penalty.pt", data=path, max_samples=768)
    reference = audit(SAMPLES / "dfa_penalty.pt", max_samples=768)
    assert cosines(ours) == cosines(reference)


def test_results_do_not_depend_on_the_batch_size() -> None:
    a = audit(SAMPLES / "dfa_penalty.pt", batch_size=64, max_samples=1024)
    b = audit(SAMPLES / "dfa_penalty.pt", batch_size=1024, max_samples=1024)
    for la, lb in zip(a.measurements.layers, b.measurements.layers, strict=True):
        assert la.g_norm == pytest.approx(lb.g_norm, rel=1e-5)
        assert la.cos == pytest.approx(lb.cos, abs=1e-6)
        assert la.dir_stab == pytest.approx(lb.dir_stab, abs=1e-6)


def test_module_adapter_needs_the_user_to_name_it(tmp_path: Path) -> None:
    model = TinyResidual()
    arch = "module:tests.adapters_fixture:TinyResidual"
    torch.save(
        {"fa_audit_format": 1, "arch": arch, "arch_config": {}, "method": "bp", "state_dict": model.state_dict()},
        tmp_path / "mine.pt",
    )
    with pytest.raises(InputError, match="names Python code to import"):
        load_bundle(tmp_path / "mine.pt")
    x = torch.randn(128, 4, generator=torch.Generator().manual_seed(0))
    save_file({"x": x, "y": torch.arange(128) % 3}, tmp_path / "eval.safetensors")
    report = audit(tmp_path / "mine.pt", data=tmp_path / "eval.safetensors", arch=arch)
    assert [layer.module for layer in report.measurements.layers] == ["embed", "blocks.0", "blocks.1"]
    assert all(layer.cos == pytest.approx(1.0) for layer in report.measurements.layers)


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda b: b["state_dict"].pop("head.bias"), "state_dict lacks head.bias"),
        (lambda b: b["state_dict"].update(extra=torch.zeros(1)), "state_dict has extra"),
        (lambda b: b["state_dict"]["head.weight"].fill_(float("nan")), "'head.weight' contains NaN"),
        (lambda b: b["arch_config"].update(width=32), "has shape"),
        (lambda b: b["arch_config"].update(colour="blue"), "unknown arch_config key(s): colour"),
        (lambda b: b.update(arch="nonexistent"), "unknown architecture 'nonexistent'"),
        (lambda b: b.update(method="telepathy"), "unknown method 'telepathy'"),
        (lambda b: b["feedback"].update(embed=torch.zeros(3, 3)), "feedback 'embed' has shape [3, 3]"),
        (
            lambda b: b["feedback"].update(embed=b["feedback"]["embed"].t().contiguous()),
            "has shape [64, 10], expected [10, 64]; its transpose has that shape: where your code multiplies by Bᵀ",
        ),
        (lambda b: b["feedback"].update(bogus=torch.zeros(10, 64)), "feedback has bogus"),
        (lambda b: b.update(fa_audit_format=2), "this fa-audit reads format 1"),
        (lambda b: b.pop("state_dict"), "lacks the required key 'state_dict'"),
    ],
)
def test_broken_bundles_are_input_errors(tmp_path: Path, mutate: object, needle: str) -> None:
    bundle = load_sample("dfa")
    mutate(bundle)  # type: ignore[operator]
    path = tmp_path / "broken.pt"
    torch.save(bundle, path)
    with pytest.raises(InputError) as err:
        audit(path, data=SAMPLES / "eval.safetensors", max_samples=64)
    assert needle in str(err.value) and str(path) in str(err.value)


@pytest.mark.parametrize(
    ("tensors", "needle"),
    [
        ({"x": torch.zeros(4, 24)}, "has no 'y'"),
        ({"x": torch.zeros(4, 24), "y": torch.zeros(4)}, "labels must be integers"),
        ({"x": torch.zeros(4, 24), "y": torch.full((4,), 10)}, "label 10 is outside the model's 10 classes"),
        ({"x": torch.full((4, 24), float("inf")), "y": torch.zeros(4, dtype=torch.long)}, "NaN or Inf"),
        ({"x": torch.zeros(4, 7), "y": torch.zeros(4, dtype=torch.long)}, "per-sample shape [7]"),
        ({"x": torch.zeros(0, 24), "y": torch.zeros(0, dtype=torch.long)}, "zero samples"),
        ({"x": torch.zeros(4, 24), "y": torch.zeros(5, dtype=torch.long)}, "but y has 5 labels"),
    ],
)
def test_broken_eval_data_are_input_errors(tmp_path: Path, tensors: dict[str, torch.Tensor], needle: str) -> None:
    path = tmp_path / "data.safetensors"
    save_file(tensors, path)
    with pytest.raises(InputError) as err:
        audit(SAMPLES / "bp.pt", data=path)
    assert needle in str(err.value) and str(path) in str(err.value)


@pytest.mark.parametrize("content", [b"", b"\x00" * 10, b"PK\x03\x04 truncated zip"])
def test_corrupt_files_are_input_errors(tmp_path: Path, content: bytes) -> None:
    for name in ("c.pt", "c.safetensors"):
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(InputError) as err:
            load_bundle(path)
        assert str(path) in str(err.value)


def test_truncated_sample_is_an_input_error_and_the_file_is_untouched(tmp_path: Path) -> None:
    data = (SAMPLES / "dfa.pt").read_bytes()
    path = tmp_path / "dfa.pt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated or corrupt"):
        load_bundle(path)
    assert path.read_bytes() == data[: len(data) // 2]


@pytest.mark.parametrize("marked", ["attribute", "slash"])
def test_a_record_marked_as_a_directory_is_refused_not_read_as_another_tensor(tmp_path: Path, marked: str) -> None:
    """One byte of the central directory, a record's DOS attributes set to 0x10 (a directory), and
    torch's reader loads other bytes for that tensor while every CRC-32 still checks: the
    mutation fuzzer's find (a feedback matrix changed, h1's Γ 0.371 → 0.121, exit 1)."""
    import zipfile

    data = bytearray((SAMPLES / "dfa.pt").read_bytes())
    with zipfile.ZipFile(SAMPLES / "dfa.pt") as archive:
        record = next(r for r in archive.infolist() if "/data/" in r.filename)
    name = record.filename.encode()
    entry = data.rindex(b"PK\x01\x02", 0, data.rindex(name))  # the record's central-directory header
    if marked == "attribute":
        data[entry + 38] |= 0x10  # external attributes: the DOS directory bit
    else:  # the same length, so every offset stays right
        start = data.index(name, entry)
        data[start + len(name) - 1 : start + len(name)] = b"/"
    path = tmp_path / "dfa.pt"
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="is marked as a directory"):
        load_bundle(path)


def test_a_file_that_changes_during_the_audit_is_refused(tmp_path: Path) -> None:
    """The SHA-256s in a report are of the bytes audited, or there is no report."""
    data = tmp_path / "eval.safetensors"
    shutil.copy(SAMPLES / "eval.safetensors", data)

    def rewrite(done: int, total: int) -> None:
        if done == 256:  # after the first batch: the file on disk is no longer what is being audited
            data.write_bytes(data.read_bytes()[:-1] + b"\x00")

    with pytest.raises(InputError, match="changed while it was being audited"):
        audit(SAMPLES / "dfa_penalty.pt", data=data, on_progress=rewrite, device="cpu")


def test_a_wrappers_component_inside_keys_comes_out_unless_two_keys_become_one() -> None:
    assert unwrapped({"features.module.0.weight": 1, "module.classifier.1.bias": 2, "modules.x": 3}) == {
        "features.0.weight": 1,
        "classifier.1.bias": 2,
        "modules.x": 3,
    }
    assert unwrapped({"blocks.0._orig_mod.fc.weight": 1}) == {"blocks.0.fc.weight": 1}
    assert averaged_counters(["ema.n_averaged", "ema.module.fc.weight", "n_averaged", "fc.weight"]) == [
        "ema.n_averaged"
    ]  # a buffer of that name in a network of yours, with no averaged module beside it, is kept
    assert unwrapped({"a.module.x": 1, "a.x": 2}) is None


def test_an_averaged_models_state_dict_is_read_without_its_step_counter(tmp_path: Path) -> None:
    """torch's AveragedModel (SWA, EMA) keeps the network under ``module.`` and its step count as
    ``n_averaged``, which is no weight of the network."""
    bundle = load_sample("dfa")
    model = build_model(fit_bundle(load_bundle(SAMPLES / "dfa.pt")))
    averaged = AveragedModel(model.module)
    state = averaged.state_dict()
    assert "n_averaged" in state and "module.embed.weight" in state
    torch.save({**bundle, "state_dict": state}, tmp_path / "swa.pt")
    report = audit(tmp_path / "swa.pt", data=SAMPLES / "eval.safetensors", max_samples=512)
    assert cosines(report) == cosines(audit(SAMPLES / "dfa.pt", max_samples=512))
    assert report.loading["prefix_stripped"] == "module." and any("AveragedModel" in n for n in report.notes)


def test_copies_of_the_network_are_found_in_time_linear_in_the_keys(tmp_path: Path) -> None:
    """The prefixes where a copy may sit come from each key's last components (a key of 5,000 components
    costs no more than a short one), with the keys under each; a file of twenty complete copies is refused
    naming a few of them, after trying at most MAX_COPIES."""
    expected = ["embed.weight", "blocks.0.fc1.weight", "head.bias"]
    keys = ["model.embed.weight", "ema.module.embed.weight", "ema.module.head.bias", "a." * 5000 + "embed.weight"]
    assert subtree_prefixes(keys, expected) == {"model.": 1, "ema.": 2, "ema.module.": 2, "a." * 5000: 1}
    bundle = load_sample("dfa")
    state = {f"copy{i}.{k}": v for i in range(20) for k, v in bundle["state_dict"].items()}
    torch.save({**bundle, "state_dict": state}, tmp_path / "twenty.pt")
    with pytest.raises(InputError, match=r"at least 16 complete copies of the network, under 'copy0\.', 'copy1\.'"):
        fit_bundle(load_bundle(tmp_path / "twenty.pt"))
    report = audit(tmp_path / "twenty.pt", key_prefix="copy7", data=SAMPLES / "eval.safetensors", max_samples=512)
    assert cosines(report) == cosines(audit(SAMPLES / "dfa.pt", max_samples=512))
    assert report.loading["keys_unused"] == 19 * len(bundle["state_dict"])
