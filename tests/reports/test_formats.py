"""The output interface: a new format is one FileFormat and one registration. A CSV of
the per-layer numbers, defined here as a third party would, is routed, checked and written
atomically by the same code as --json, with no other change."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path

import pytest

from fa_audit import InputError
from fa_audit.cli.outputs import Format, Outputs, emit
from fa_audit.cli.views import report_result
from fa_audit.formats import FORMATS, FileFormat, Result
from fa_audit.report import AuditReport


def _csv(result: Result) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["layer", "module", "cos", "z"])
    for i, layer in enumerate(result.shown["layers"]):
        writer.writerow([f"h{i}", layer["module"], layer["cos"], layer["z"]])
    return out.getvalue().encode()


CSV = FileFormat("csv", "the per-layer numbers as CSV", to_stdout=True, write=_csv)


@pytest.fixture
def with_csv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(FORMATS, "csv", CSV)


def test_a_registered_format_is_written(with_csv: None, tmp_path: Path, audited: Callable[..., AuditReport]) -> None:
    report = audited("dfa")
    out = Outputs.of(Format.TABLE, True, True, csv=str(tmp_path / "layers.csv"), json=str(tmp_path / "r.json"))
    out.check()
    emit(report_result(report), out)
    rows = list(csv.reader((tmp_path / "layers.csv").read_text().splitlines()))
    assert rows[0] == ["layer", "module", "cos", "z"] and len(rows) == 1 + len(report.measurements.layers)
    assert float(rows[1][2]) == pytest.approx(report.measurements.layers[0].cos)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["layers.csv", "r.json"]  # no temporary file left


def test_a_registered_format_follows_the_standard_output_rules(with_csv: None, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="only one of --csv and --json can write to standard output"):
        Outputs.of(Format.TABLE, False, True, csv="-", json="-").check()
    with pytest.raises(InputError, match="--csv and --json name the same file"):
        Outputs.of(Format.TABLE, False, True, csv=str(tmp_path / "o"), json=str(tmp_path / "o")).check()
    with pytest.raises(InputError, match=r"--plot writes an image \(PNG, PDF or SVG by the extension\): give it a"):
        Outputs.of(Format.TABLE, False, True, plot="-").check()
