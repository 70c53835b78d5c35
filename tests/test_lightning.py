"""Auditing during training: a real ``lightning.Trainer`` run with the AuditCallback (its
logger's metrics hold the per-layer keys, its JSON-lines log reads back as a trajectory,
``stop_on`` stops a run whose named check fails), a plain loop's ``report.scalars()`` and
``AuditLog``, the early warning of a falling ‖g‖ on the bundled DFA snapshots, and a
Lightning ``.ckpt`` audited with its LightningModule class and no --arch-config."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from types import ModuleType

import pytest
import torch
from safetensors.torch import load_file

from fa_audit import AuditLog, ExitCode
from fa_audit.report.trajectories import load_reports, trajectory

from .cli_runner import run
from .conftest import SAMPLES, repeatable, user_module
from .user_code import hidden_forward, module_fixture

pytest.importorskip("lightning")

LITNET = (
    """
import lightning as L
import torch
from torch import nn
from torch.nn import functional as F


class LitNet(L.LightningModule):
    def __init__(self, width=32, depth=2, lr=0.05):
        super().__init__()
        self.save_hyperparameters()
        self.embed = nn.Sequential(nn.Linear(24, width), nn.Tanh())
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(width, width), nn.Tanh()) for _ in range(depth))
        self.head = nn.Linear(width, 10)

"""
    + hidden_forward()
    + """

    def training_step(self, batch, index):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def validation_step(self, batch, index):
        x, y = batch
        self.log("val_loss", F.cross_entropy(self(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
"""
)


litnet = module_fixture("litnet", LITNET)


def _loader(name: str, n: int) -> torch.utils.data.DataLoader[tuple[torch.Tensor, ...]]:
    data = load_file(SAMPLES / f"{name}.safetensors")
    dataset = torch.utils.data.TensorDataset(data["x"][:n].float(), data["y"][:n])
    return torch.utils.data.DataLoader(dataset, batch_size=64)


def _trainer(folder: Path, callback: object, epochs: int) -> object:
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger

    return L.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, logger=CSVLogger(folder, name="logs"),
        callbacks=[callback], enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
    )  # fmt: skip


def test_the_callback_logs_every_epoch_and_the_log_reads_back(litnet: tuple[Path, ModuleType]) -> None:
    from fa_audit.live.lightning import AuditCallback

    folder, module = litnet
    torch.manual_seed(0)
    model = module.LitNet()
    callback = AuditCallback("bp", log_path=folder / "audits.jsonl")
    trainer = _trainer(folder, callback, epochs=2)
    trainer.fit(model, _loader("train", 1024), _loader("eval", 256))  # type: ignore[attr-defined]

    assert len(callback.reports) == 2 and [r.meta["epoch"] for r in callback.reports] == [0, 1]  # Lightning's count
    with open(Path(trainer.logger.log_dir) / "metrics.csv") as f:  # type: ignore[attr-defined]
        rows = list(csv.DictReader(f))
    logged = {k for row in rows for k, v in row.items() if v}
    assert {"fa_audit/cos/h0", "fa_audit/z/h2", "fa_audit/g_norm/h1", "fa_audit/exit_code"} <= logged
    last = callback.reports[-1].scalars()
    assert float(next(r for r in rows if r["fa_audit/g_norm/h1"])["fa_audit/g_norm/h1"]) > 0
    assert last["fa_audit/cos/h1"] == pytest.approx(1.0)  # BP's credit is the gradient it was proved to be
    assert "fa_audit/cos_se/h0" in logged and last["fa_audit/cos_se/h1"] == pytest.approx(0.0, abs=1e-6)  # every row 1
    accuracy, samples = last["fa_audit/accuracy"], callback.reports[-1].measurements.samples
    assert last["fa_audit/accuracy_se"] == pytest.approx(math.sqrt(accuracy * (1 - accuracy) / (samples - 1)))

    traj = trajectory(load_reports([folder / "audits.jsonl"]))
    assert [row.epoch for row in traj.rows] == [0, 1]
    code, out, err = run("run", folder / "audits.jsonl")
    assert code == callback.reports[-1].exit_code, err
    assert "epoch 1" in out or "1 " in out
    assert trainer.callback_metrics["fa_audit/check/reference_validity"] == 1.0  # type: ignore[attr-defined]


def test_stop_on_stops_a_run_whose_check_fails(litnet: tuple[Path, ModuleType]) -> None:
    from fa_audit.live.lightning import AuditCallback

    folder, module = litnet
    torch.manual_seed(0)
    model = module.LitNet()
    # a frozen-blocks baseline that no net of this size beats (and that leaves 3 pp of headroom,
    # so the margin is assessed): depth utility fails at epoch 1
    callback = AuditCallback("bp", baseline_accuracy=0.97, stop_on=["depth_utility"])
    trainer = _trainer(folder, callback, epochs=5)
    trainer.fit(model, _loader("train", 512), _loader("eval", 256))  # type: ignore[attr-defined]
    assert len(callback.reports) == 1 and trainer.current_epoch == 1  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="stop_on names no check"):
        AuditCallback("bp", stop_on=["depth"])


def test_a_lightning_checkpoint_builds_its_module_from_its_hyper_parameters(
    litnet: tuple[Path, ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, module = litnet
    torch.manual_seed(0)
    model = module.LitNet(width=16, depth=3)
    import lightning as L

    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False)  # fmt: skip
    trainer.fit(model, _loader("train", 256))
    trainer.save_checkpoint(folder / "epoch=0.ckpt")
    monkeypatch.chdir(folder)
    code, out, err = run(
        "run", "epoch=0.ckpt", "--arch", "module:litnet:LitNet", "--method", "bp",
        "--data", SAMPLES / "eval.safetensors", "--max-samples", 256, "--json", "-",
    )  # fmt: skip
    assert code == ExitCode.INCOMPLETE, err  # no baseline: depth utility not assessed
    report = json.loads(out)
    assert [la["module"] for la in report["layers"]] == ["embed", "blocks.0", "blocks.1", "blocks.2"]
    assert any("hyper_parameters" in note for note in report["notes"])
    # save_hyperparameters(args) keeps the training's arguments too: the class gets those it takes
    saved = torch.load(folder / "epoch=0.ckpt", weights_only=False)
    saved["hyper_parameters"].update(warmup_steps=100, optimizer="adamw")
    torch.save(saved, folder / "args.ckpt")
    code, out, err = run(
        "run", "args.ckpt", "--arch", "module:litnet:LitNet", "--method", "bp",
        "--data", SAMPLES / "eval.safetensors", "--max-samples", 256, "--json", "-",
    )  # fmt: skip
    assert code == ExitCode.INCOMPLETE, err
    said = " ".join(json.loads(out)["notes"])
    assert "without warmup_steps, optimizer, which it does not take" in said


def test_a_plain_loop_logs_scalars_and_the_snapshots_warn_before_the_floor(tmp_path: Path) -> None:
    from fa_audit import audit

    log = AuditLog(tmp_path / "run.jsonl")
    for epoch in (1, 2, 3):
        report = audit(SAMPLES / f"dfa_ep{epoch}.pt", max_samples=512, device="cpu")
        scalars = report.scalars()
        assert scalars["fa_audit/g_norm/h1"] == report.layer("h1").g_norm
        assert all(isinstance(v, float) for v in scalars.values())
        log.append(report)
    warnings = trajectory(load_reports([tmp_path / "run.jsonl"])).early_warnings()
    # ‖g‖/‖e‖ at blocks.1 is 2.4e-6, 4.9e-7, 2.2e-7 over epochs 1-3 and below 1e-7 at epoch 5 (dfa_ep5)
    blocks1 = next(w for w in warnings if w.startswith("blocks.1:"))
    predicted = float(blocks1.split("near epoch ", 1)[1].split(" ", 1)[0])
    assert 3 < predicted < 5 and "1e-7 floor" in blocks1
    # three epochs leave one degree of freedom (t = 12.7): the slope is not known well enough to bound when
    assert blocks1.endswith("(3 epochs do not bound it at 95 %)")
    code, out, _ = run("run", tmp_path / "run.jsonl")
    assert code == ExitCode.WALK_BACK and "early warning: blocks.1" in out


def test_a_monitor_reads_the_audits_keys(litnet: tuple[Path, ModuleType]) -> None:
    """ModelCheckpoint and EarlyStopping find fa_audit's keys in trainer.callback_metrics (they
    reported "could not find the monitored key" when the callback logged past the module)."""
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from fa_audit.live.lightning import AuditCallback

    folder, module = litnet
    torch.manual_seed(0)
    saved = ModelCheckpoint(dirpath=folder / "best", monitor="fa_audit/cos/h1", mode="max", save_top_k=1)
    stop = EarlyStopping(
        monitor="fa_audit/check/reference_validity", mode="max", patience=0, check_on_train_epoch_end=True
    )
    trainer = L.Trainer(
        max_epochs=2, accelerator="cpu", devices=1, logger=CSVLogger(folder, name="monitored"),
        callbacks=[AuditCallback("bp"), saved, stop], enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(module.LitNet(), _loader("train", 512), _loader("eval", 128))
    assert saved.best_model_path and Path(saved.best_model_path).exists()
    assert float(saved.best_model_score) == pytest.approx(1.0)  # type: ignore[arg-type]
    assert trainer.callback_metrics["fa_audit/check/depth_utility"] in (0.0, 0.5, 1.0)


def test_no_eval_data_is_refused_before_the_first_epoch(litnet: tuple[Path, ModuleType]) -> None:
    import lightning as L

    from fa_audit.live.lightning import AuditCallback

    _, module = litnet
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                        callbacks=[AuditCallback("bp")], enable_checkpointing=False)  # fmt: skip
    model = module.LitNet()
    with pytest.raises(ValueError, match="AuditCallback needs eval data"):
        trainer.fit(model, _loader("train", 256))
    assert trainer.global_step == 0  # refused at setup: not one step trained


def test_fast_dev_run_audits_a_few_batches_and_writes_no_log(litnet: tuple[Path, ModuleType]) -> None:
    import lightning as L

    from fa_audit.live.lightning import AuditCallback

    folder, module = litnet
    torch.manual_seed(0)
    callback = AuditCallback("bp", log_path=folder / "quick.jsonl")
    trainer = L.Trainer(fast_dev_run=2, accelerator="cpu", callbacks=[callback], enable_progress_bar=False,
                        enable_model_summary=False)  # fmt: skip
    trainer.fit(module.LitNet(), _loader("train", 1024), _loader("eval", 256))
    assert len(callback.reports) == 1 and callback.reports[0].measurements.samples == 2 * 64
    assert not (folder / "quick.jsonl").exists()


ACCUMULATING = (
    LITNET
    + '''

from fa_audit import AuditAccumulator


class AccNet(LitNet):
    """The torchmetrics way: the validation step hands its batch to the accumulator."""

    def __init__(self):
        super().__init__()
        self.audit = AuditAccumulator("bp", device="cpu")
        self.reports = []

    def validation_step(self, batch, index):
        super().validation_step(batch, index)
        self.audit.update(self, *batch)

    def on_validation_epoch_end(self):
        self.reports.append(self.audit.compute())
        self.audit.reset()
'''
)


def test_the_accumulator_audits_the_validation_steps_batches(tmp_path: Path) -> None:
    """The validation loop's own batches, no second pass over its loader: the report is
    audit_module's on the same batches, to the bit (but the rows the proof draws at random)."""
    import lightning as L

    from fa_audit import audit_module

    module = user_module(tmp_path, "accnet", ACCUMULATING)
    torch.manual_seed(0)
    model = module.AccNet()
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0)  # fmt: skip
    val = _loader("eval", 256)
    trainer.fit(model, _loader("train", 512), val)
    assert len(model.reports) == 1 and model.reports[0].measurements.samples == 256
    again = audit_module(model, val, method="bp", device="cpu")
    assert repeatable(model.reports[0].to_dict()["layers"]) == repeatable(again.to_dict()["layers"])
    assert model.audit.batches == []  # reset after compute


def test_lightnings_weight_averaging_checkpoint_audits_the_averaged_weights(
    litnet: tuple[Path, ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lightning's EMAWeightAveraging saves the averaged weights as ``state_dict`` and the live ones as
    ``current_model_state``: the averaged ones are audited, the note names the live ones and
    ``--state-dict-key current_model_state`` audits those."""
    import lightning as L
    from lightning.pytorch.callbacks import EMAWeightAveraging, ModelCheckpoint

    folder, module = litnet
    torch.manual_seed(0)
    saved = ModelCheckpoint(dirpath=folder / "ema", filename="last", save_top_k=1)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[EMAWeightAveraging(decay=0.9), saved])  # fmt: skip
    trainer.fit(module.LitNet(width=16, depth=2), _loader("train", 256))
    checkpoint = torch.load(folder / "ema" / "last.ckpt", weights_only=False)
    assert {"state_dict", "current_model_state", "averaging_state"} <= set(checkpoint)
    monkeypatch.chdir(folder / "ema")
    common = ("--arch", "module:litnet:LitNet", "--method", "bp", "--data", SAMPLES / "eval.safetensors",
              "--max-samples", 256, "--json", "-")  # fmt: skip
    reports = {}
    for key in ("state_dict", "current_model_state"):
        code, out, err = run("run", "last.ckpt", "--state-dict-key", key, *common)
        assert code == ExitCode.INCOMPLETE, err
        reports[key] = json.loads(out)
    code, out, err = run("run", "last.ckpt", *common)
    weights = [(la["h_norm"], la["g_norm"]) for la in json.loads(out)["layers"]]
    assert weights == [(la["h_norm"], la["g_norm"]) for la in reports["state_dict"]["layers"]]  # found by itself
    assert any("'current_model_state'" in note and "not used" in note for note in json.loads(out)["notes"])
    averaged, live = (reports[k]["layers"][0]["h_norm"] for k in ("state_dict", "current_model_state"))
    assert averaged != pytest.approx(live, rel=1e-6)  # two sets of weights, each read as saved


def test_a_lightning_module_holding_a_model_and_its_ema_copy(tmp_path: Path) -> None:
    """A LightningModule that keeps ``self.net`` and ``self.ema = AveragedModel(self.net)`` saves both
    (``net.*``, ``ema.module.*``, ``ema.n_averaged``): which one a paper reports the file does not say, so
    the audit is refused naming both, and ``--key-prefix`` audits either, with the numbers of that network
    saved alone. A module holding one network beside other parameters (its loss's) audits the network."""
    import lightning as L
    from torch.nn import functional as F
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    from model_adapters import get_adapter

    saved = torch.load(SAMPLES / "dfa.pt", weights_only=True)

    class WithEma(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = get_adapter("resmlp").build(saved["arch_config"]).module
            self.net.load_state_dict(saved["state_dict"])
            self.ema = AveragedModel(self.net, multi_avg_fn=get_ema_multi_avg_fn(0.5))

        def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], index: int) -> torch.Tensor:
            x, y = batch
            return F.cross_entropy(self.net(x), y)

        def on_train_batch_end(self, *args: object) -> None:
            self.ema.update_parameters(self.net)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.net.parameters(), lr=0.05)

    torch.manual_seed(0)
    lit = WithEma()
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False)  # fmt: skip
    trainer.fit(lit, _loader("train", 256))
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    assert {"net.embed.weight", "ema.module.embed.weight", "ema.n_averaged"} <= set(
        torch.load(tmp_path / "last.ckpt", weights_only=False)["state_dict"]
    )
    alone = {"net": lit.net.state_dict(), "ema": lit.ema.module.state_dict()}
    for name, state in alone.items():
        torch.save({**saved, "state_dict": state}, tmp_path / f"{name}.pt")
    common = ("--arch", "resmlp", "--arch-config", json.dumps(saved["arch_config"]), "--method", "dfa",
              "--feedback", SAMPLES / "dfa.feedback.safetensors", "--data", SAMPLES / "eval.safetensors",
              "--max-samples", 512, "--json", "-")  # fmt: skip

    code, out, err = run("run", tmp_path / "last.ckpt", *common)
    assert code == ExitCode.INPUT_ERROR and not out
    assert "2 complete copies of the network, under 'net.' and 'ema.module.'" in err and "--key-prefix" in err
    assert "Traceback" not in err

    for name, prefix in (("net", "net"), ("ema", "ema.module.")):
        code, out, err = run("run", tmp_path / "last.ckpt", "--key-prefix", prefix, *common)
        assert code in (ExitCode.TRUST, ExitCode.WALK_BACK, ExitCode.INCOMPLETE), err
        report = json.loads(out)
        code, plain, err = run("run", tmp_path / f"{name}.pt", *common[4:])
        assert repeatable(report["layers"]) == repeatable(json.loads(plain)["layers"]), name
        assert report["loading"]["keys_unused"] == len(alone["ema" if name == "net" else "net"])
        assert any("left unused" in note for note in report["notes"])
    net, ema = (json.loads(run("run", tmp_path / "last.ckpt", "--key-prefix", p, *common)[1]) for p in ("net", "ema."))
    assert net["layers"][1]["cos"] != pytest.approx(ema["layers"][1]["cos"], rel=1e-6)  # two networks, each as saved
    assert ema["loading"]["wrappers_removed"] == ["module"]  # ema. with AveragedModel's module taken out

    code, out, err = run("run", tmp_path / "last.ckpt", "--key-prefix", "teacher", *common)
    assert code == ExitCode.INPUT_ERROR and "no state-dict key starts with 'teacher.' (--key-prefix)" in err

    # one network beside a loss's parameter: found without --key-prefix
    state = {f"model.{k}": v for k, v in alone["net"].items()} | {"criterion.temperature": torch.tensor(2.0)}
    torch.save({"state_dict": state}, tmp_path / "one.ckpt")
    code, out, err = run("run", tmp_path / "one.ckpt", *common)
    report = json.loads(out)
    assert repeatable(report["layers"]) == repeatable(net["layers"])
    assert report["loading"]["prefix_stripped"] == "model." and report["loading"]["keys_unused"] == 1
    assert any("the other key (criterion.temperature) was left unused" in note for note in report["notes"])
