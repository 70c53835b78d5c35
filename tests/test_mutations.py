"""Random byte-level mutations of valid files: a .pt checkpoint either loads to exactly
the same audit or ends in exit 2 (its CRCs are checked); a data file ends in exit 2 or
a schema-valid report (safetensors carries no checksum). Never a crash, never a hang."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file
from typer.testing import CliRunner

from fa_audit import ExitCode
from fa_audit.cli import app
from fa_audit.report.schema import schema
from model_adapters import get_adapter

from .conftest import repeatable

CONFIG = {"in_dim": 6, "width": 8, "depth": 2, "num_classes": 3}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny")
    model = get_adapter("resmlp").build(CONFIG, seed=0)
    g = torch.Generator().manual_seed(0)
    feedback = {name: torch.randn(3, 8, generator=g) for name in model.hidden_modules}
    torch.save(
        {
            "fa_audit_format": 1,
            "arch": "resmlp",
            "arch_config": CONFIG,
            "method": "dfa",
            "state_dict": model.module.state_dict(),
            "feedback": feedback,
            "meta": {"data": "eval.safetensors"},
        },
        folder / "tiny.pt",
    )
    save_file(
        {"x": torch.randn(96, 6, generator=g), "y": torch.randint(0, 3, (96,), generator=g)},
        folder / "eval.safetensors",
    )
    return folder


@pytest.fixture(autouse=True)
def no_hang() -> Iterator[None]:
    def alarm(signum: int, frame: object) -> None:
        raise TimeoutError("an audit of a 100-sample file took over 30 s")

    previous = signal.signal(signal.SIGALRM, alarm)
    yield
    signal.signal(signal.SIGALRM, previous)


def audit_json(checkpoint: Path, data: Path | None = None) -> tuple[int, dict[str, Any] | None, str]:
    args = ["run", str(checkpoint), "--json", "-", "--batch-size", "32"] + (["--data", str(data)] if data else [])
    signal.alarm(30)
    try:
        result = CliRunner().invoke(app, args)
    finally:
        signal.alarm(0)
    assert result.exit_code != ExitCode.INTERNAL_ERROR, result.stderr
    assert "Traceback" not in result.stderr
    if result.exit_code == ExitCode.INPUT_ERROR:
        assert len(result.stderr.strip().splitlines()) == 1
        return result.exit_code, None, result.stderr
    return result.exit_code, json.loads(result.stdout), result.stderr


mutations = st.lists(
    st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=255)), min_size=1, max_size=4
)
fuzz_settings = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def mutate(raw: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    data = bytearray(raw)
    for pos, value in edits:
        data[pos % len(data)] = value
    return bytes(data[: cut % len(data)] if cut else data)


def _measured(report: dict[str, Any]) -> list[Any]:
    return repeatable([report["layers"], report["accuracy"], report["checks"]])


@fuzz_settings
@given(edits=mutations, cut=st.none() | st.integers(min_value=1))
def test_mutated_checkpoint_loads_the_same_or_exits_2(
    tiny: Path, edits: list[tuple[int, int]], cut: int | None
) -> None:
    _, reference, _ = audit_json(tiny / "tiny.pt")
    assert reference is not None
    mutated = tiny / "mutated.pt"
    mutated.write_bytes(mutate((tiny / "tiny.pt").read_bytes(), edits, cut))
    code, report, _ = audit_json(mutated)
    if code != ExitCode.INPUT_ERROR:
        assert report is not None and _measured(report) == _measured(reference)


@fuzz_settings
@given(edits=mutations, cut=st.none() | st.integers(min_value=1))
def test_mutated_data_exits_2_or_gives_a_valid_report(
    tiny: Path, edits: list[tuple[int, int]], cut: int | None
) -> None:
    mutated = tiny / "mutated.safetensors"
    mutated.write_bytes(mutate((tiny / "eval.safetensors").read_bytes(), edits, cut))
    code, report, _ = audit_json(tiny / "tiny.pt", mutated)
    if code != ExitCode.INPUT_ERROR:
        assert report is not None
        jsonschema.validate(report, schema())
