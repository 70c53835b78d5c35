"""Adapter and method registries: duplicates refused, plugins found, broken plugins warned."""

from __future__ import annotations

import json
import warnings
from importlib.metadata import EntryPoint
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import model_adapters.registry as registry
from fa_audit import methods
from model_adapters import get_adapter, list_adapters, register_adapter

from .cli_runner import run
from .conftest import ROOT, SAMPLES


def test_builtins_are_registered() -> None:
    assert {"resmlp", "mlp"} <= set(list_adapters())
    assert set(methods.list_methods()) >= {"bp", "dfa", "fa", "frozen"}


def test_duplicate_adapter_name_is_refused() -> None:
    class Again:
        name = "resmlp"
        description = "duplicate"

    list_adapters()
    with pytest.raises(ValueError, match="already registered"):
        register_adapter(Again)


def test_duplicate_method_name_is_refused() -> None:
    with pytest.raises(ValueError, match="already registered"):
        methods.register_method(methods.get_method("dfa"))


def test_resmlp_state_dict_keys_match_the_spec_byte_for_byte() -> None:
    model = get_adapter("resmlp").build({"in_dim": 3, "width": 4, "depth": 1, "num_classes": 2})
    assert " ".join(model.module.state_dict()) == (
        "embed.weight embed.bias blocks.0.ln.weight blocks.0.ln.bias blocks.0.fc1.weight blocks.0.fc1.bias "
        "blocks.0.fc2.weight blocks.0.fc2.bias norm.weight norm.bias head.weight head.bias"
    )
    no_ln = get_adapter("resmlp").build({"in_dim": 3, "width": 4, "depth": 1, "num_classes": 2, "terminal_ln": False})
    assert "norm.weight" not in no_ln.module.state_dict()
    mlp = get_adapter("mlp").build({"in_dim": 3, "width": 4, "depth": 2, "num_classes": 2})
    assert (
        " ".join(mlp.module.state_dict())
        == "layers.0.weight layers.0.bias layers.1.weight layers.1.bias head.weight head.bias"
    )


def test_entry_point_plugins_register_and_broken_ones_only_warn(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    good = EntryPoint(name="tiny", value="tests.plugin_fixture:TinyAdapter", group=registry.ENTRY_POINT_GROUP)
    bad = EntryPoint(name="broken", value="tests.no_such_module:Nothing", group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda group: [good, bad])
    monkeypatch.setattr(registry, "_discovered", False)
    monkeypatch.setattr(registry, "_ADAPTERS", dict(registry._ADAPTERS))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a Python warning (file path, line number) would fail here
        names = set(list_adapters())
    assert "tiny-plugin" in names
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fa-audit: warning: adapter plugin 'broken' from ")
    assert "ModuleNotFoundError" in err and "failed to load and is skipped" in err


def test_the_example_plugin_package_is_found_listed_and_audits(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """examples/fa-audit-gated-mlp as pip would install it: its entry point is found, the
    adapters listing names its distribution, and a checkpoint of its architecture audits."""
    monkeypatch.syspath_prepend(str(ROOT / "examples" / "fa-audit-gated-mlp"))
    ep = EntryPoint(name="gated_mlp", value="fa_audit_gated_mlp:GatedMLPAdapter", group=registry.ENTRY_POINT_GROUP)
    ep = ep._for(SimpleNamespace(name="fa-audit-gated-mlp"))  # type: ignore[attr-defined, arg-type]
    monkeypatch.setattr(registry, "entry_points", lambda group: [ep])
    monkeypatch.setattr(registry, "_discovered", False)
    monkeypatch.setattr(registry, "_ADAPTERS", dict(registry._ADAPTERS))
    monkeypatch.setattr(registry, "_SOURCES", {})
    code, out, _ = run("adapters")
    assert code == 0 and "gated_mlp" in out and "fa-audit-gated-mlp" in out
    assert {"resmlp", "mlp", "small_cnn", "vit_mini"} <= set(list_adapters())

    config = {"in_dim": 24, "width": 16, "depth": 3, "num_classes": 10}
    model = get_adapter("gated_mlp").build(config, seed=0)
    g = torch.Generator().manual_seed(0)
    feedback = {name: torch.randn(10, 16, generator=g) for name in model.hidden_modules}
    bundle = {"fa_audit_format": 1, "arch": "gated_mlp", "arch_config": config, "method": "dfa",
              "state_dict": model.module.state_dict(), "feedback": feedback}  # fmt: skip
    torch.save(bundle, tmp_path / "gated.pt")
    code, out, err = run("run", tmp_path / "gated.pt", "--data", SAMPLES / "eval.safetensors", "--json", "-")
    assert code in (0, 1, 3), err
    layers = json.loads(out)["layers"]
    assert [la["module"] for la in layers] == ["embed", "blocks.0", "blocks.1", "blocks.2"]
    assert all(la["cos"] is not None for la in layers)


def test_the_adapters_listing_keeps_bracketed_text_and_lists_each_convention_once() -> None:
    """rich read "[classes, in]" as markup and dropped it ("dfa: )"); tinydfa was listed twice."""
    from .cli_runner import run

    code, out, _ = run("adapters")
    said = " ".join(out.split())
    assert code == 0 and "dfa: [classes, in]" in said
    assert sum(line.split("│")[1].strip() == "tinydfa" for line in out.splitlines() if line.count("│") > 2) == 1
