"""--fit-baseline: the tool fits the matched frozen-random-blocks baseline itself, and
caches it. On the samples it reproduces frozen.pt and the same verdicts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from fa_audit import ExitCode, InputError
from fa_audit.api import audit
from fa_audit.config import load_thresholds
from fa_audit.report import AuditReport

from .cli_runner import run
from .conftest import SAMPLES

TRAIN = SAMPLES / "train.safetensors"


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[AuditReport, AuditReport, Path]:
    cache = tmp_path_factory.mktemp("cache")
    first = audit(SAMPLES / "dfa_penalty.pt", fit_baseline=True, train_data=TRAIN, cache_dir=cache, device="cpu")
    second = audit(SAMPLES / "dfa_penalty.pt", fit_baseline=True, train_data=TRAIN, cache_dir=cache, device="cpu")
    return first, second, cache


def test_the_fitted_baseline_reproduces_frozen_pt_and_its_verdicts(
    fitted: tuple[AuditReport, AuditReport, Path], audited: Callable[..., AuditReport]
) -> None:
    report, _, _ = fitted
    given = audited("dfa_penalty", baseline=True)
    assert report.baseline is not None and report.baseline.source == "fitted"
    assert report.baseline_accuracy == pytest.approx(given.baseline_accuracy, abs=0.02)
    assert report.verdict is given.verdict
    assert [c.status for c in report.checks] == [c.status for c in given.checks]
    assert report.check("depth_utility").values["baseline_source"] == "fitted"


def test_a_second_run_reads_the_cache(fitted: tuple[AuditReport, AuditReport, Path]) -> None:
    first, second, cache = fitted
    assert second.baseline is not None and second.baseline.source == "cache"
    assert second.baseline_accuracy == first.baseline_accuracy
    assert second.to_dict()["baseline"]["source"] == "cache" and len(list(cache.glob("*.safetensors"))) == 1
    assert str(TRAIN) in second.inputs  # the train data is an input whose hash the report gives
    assert any("read from the cache" in note for note in second.check("depth_utility").notes)


def test_another_checkpoint_of_the_architecture_reuses_the_fit(fitted: tuple[AuditReport, AuditReport, Path]) -> None:
    """A trajectory or a compare fits one baseline per architecture: the others read it."""
    first, _, cache = fitted
    other = audit(SAMPLES / "dfa.pt", fit_baseline=True, train_data=TRAIN, cache_dir=cache, device="cpu")
    assert other.baseline is not None and other.baseline.source == "cache"
    assert other.baseline_accuracy == first.baseline_accuracy


def test_fitting_needs_train_data_and_only_one_baseline(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no train data: pass --train-data"):
        audit(SAMPLES / "dfa_penalty.pt", fit_baseline=True, device="cpu")
    code, _, err = run(
        "run", SAMPLES / "dfa_penalty.pt", "--fit-baseline", "--train-data", TRAIN, "--baseline-accuracy", "0.6"
    )
    assert code == ExitCode.INPUT_ERROR and "one of --baseline" in err


def test_the_budget_is_read_from_yaml(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text("depth_utility: {baseline: {epochs: 1, lr: 1.0e-3, weight_decay: 0}}\n")
    budget = load_thresholds(tmp_path / "t.yaml").depth_utility.baseline
    assert (budget.epochs, budget.lr, budget.weight_decay, budget.batch_size) == (1, 1e-3, 0.0, 64)
    (tmp_path / "bad.yaml").write_text("depth_utility: {baseline: {epochz: 1}}\n")
    with pytest.raises(InputError, match=r"depth_utility\.baseline\.epochz"):
        load_thresholds(tmp_path / "bad.yaml")
