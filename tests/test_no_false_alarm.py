"""No false alarm on a healthy network (the protocol's positive control): a BP net whose loss is
small is saturated, not collapsed; no row of its gradient is dropped by float32 underflow; and a
margin inside the eval set's own noise, or a task without headroom, never walks it back.

The nets are trained here, with backprop, on an easy task (four well-separated clusters) by a
plain tanh MLP with no LayerNorm, in a few seconds.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.nn import functional as F

import fa_audit
from fa_audit import audit, audit_module
from fa_audit.checks.margin import unpaired_se_pp
from fa_audit.loading import load_bundle, load_eval_data
from fa_audit.measure.loss_head import log_doubt
from fa_audit.report import AuditReport, Status, Verdict
from model_adapters import AdaptedModel, get_adapter

from .cli_runner import run
from .conftest import SAMPLES, user_module

CONFIG = {"in_dim": 24, "width": 32, "depth": 3, "num_classes": 4}
HEAD_SCALE = 12.0
"""Makes the trained net's margins exceed 87, where e = softmax − onehot is below float32's range."""


@dataclass(frozen=True)
class EasyTask:
    data: Path
    bp: Path
    frozen: Path
    sharp: Path
    """The BP net with its head scaled by HEAD_SCALE: saturated beyond float32's range."""


def _train(x: torch.Tensor, y: torch.Tensor, freeze: bool) -> AdaptedModel:
    model = get_adapter("mlp").build(CONFIG, seed=0)
    params = [p for n, p in model.module.named_parameters() if not (freeze and model.is_deep(n))]
    opt = torch.optim.Adam(params, lr=0.1)
    g = torch.Generator().manual_seed(1)
    for _ in range(60):
        for idx in torch.randperm(len(y), generator=g).split(64):
            logits, _ = model.forward_hidden(x[idx])
            opt.zero_grad()
            F.cross_entropy(logits, y[idx]).backward()
            opt.step()
    return model


@pytest.fixture(scope="module")
def easy(tmp_path_factory: pytest.TempPathFactory) -> EasyTask:
    folder = tmp_path_factory.mktemp("easy")
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 24, generator=g)
    y = torch.randint(0, 4, (3072,), generator=g)
    x = centers[y] + 0.5 * torch.randn(3072, 24, generator=g)
    save_file({"x": x[2048:].contiguous(), "y": y[2048:].contiguous()}, str(folder / "eval.safetensors"))
    meta = {"data": "eval.safetensors", "seed": 0}
    paths = {}
    for name, freeze in (("bp", False), ("frozen", True)):
        model = _train(x[:2048], y[:2048], freeze)
        paths[name] = folder / f"{name}.pt"
        fa_audit.save_bundle(paths[name], model.module, arch="mlp", arch_config=CONFIG,
                             method="frozen" if freeze else "bp", meta=meta)  # fmt: skip
        if not freeze:
            with torch.no_grad():
                model.module.head.weight *= HEAD_SCALE
                model.module.head.bias *= HEAD_SCALE
            paths["sharp"] = folder / "sharp.pt"
            fa_audit.save_bundle(paths["sharp"], model.module, arch="mlp", arch_config=CONFIG, method="bp", meta=meta)
    return EasyTask(folder / "eval.safetensors", paths["bp"], paths["frozen"], paths["sharp"])


def _run(path: Path, **settings: object) -> AuditReport:
    return audit(path, device="cpu", **settings)


def test_a_saturated_bp_net_is_not_called_collapsed(easy: EasyTask) -> None:
    report = _run(easy.bp)
    check = report.check("reference_validity")
    assert report.measurements.saturated_fraction > 0.2  # the easy task's softmax is saturated
    assert check.status is Status.PASS and report.modes == []
    for layer in report.measurements.layers:
        assert layer.cos == pytest.approx(1.0, abs=1e-9) and layer.zero_norm_rows == 0


def test_no_row_is_dropped_where_float32_underflows(easy: EasyTask) -> None:
    """With margins past 87, e itself is below float32's range: a float32 backward from the float64
    loss zeroes most rows of g. The audit's rows are all there, their norms those of float64."""
    report = _run(easy.sharp)
    model = get_adapter("mlp").build(CONFIG)
    model.module.load_state_dict(load_bundle(easy.sharp).state_dict)
    data = load_eval_data(easy.data)
    x, y = torch.as_tensor(data.x[:]).float(), torch.as_tensor(data.y[:]).long()
    logits, hidden = model.forward_hidden(x)
    naive = torch.autograd.grad(F.cross_entropy(logits.double(), y, reduction="sum"), hidden, retain_graph=True)
    assert float((naive[-1].norm(dim=1) == 0).double().mean()) > 0.5  # the failure this guards against
    assert float((log_doubt(logits.double()) < math.log(1e-7)).double().mean()) > 0.9
    model64 = model.module.double()
    logits64, hidden64 = model64(x.double(), return_hidden=True)
    p = logits64.softmax(-1)
    onehot = F.one_hot(y, 4).bool()
    exact = torch.where(onehot, -p.masked_fill(onehot, 0.0).sum(-1, keepdim=True), p)
    truth = torch.autograd.grad(logits64, hidden64, exact)
    check = report.check("reference_validity")
    assert check.status is Status.PASS and report.modes == []
    assert any(n.startswith("saturation, not collapse") for n in check.notes)
    assert check.values["diagnostic_b"] is True  # the protocol's absolute floor fires, and is shown
    for layer, g in zip(report.measurements.layers, truth, strict=True):
        assert layer.zero_norm_rows == 0 and layer.cos == pytest.approx(1.0, abs=1e-9)
        assert layer.g_norm < 1e-7
        assert layer.g_norm == pytest.approx(float(g.norm(dim=1).median()), rel=1e-4)
        assert layer.fp64_agree is not None and layer.fp64_agree > 0.999


def test_no_headroom_above_the_baseline_is_not_assessed_never_a_failure(easy: EasyTask) -> None:
    report = _run(easy.bp, baseline=easy.frozen)
    check = report.check("depth_utility")
    assert report.baseline is not None and report.baseline.accuracy > 0.98
    assert check.values["functional"] == "not_assessed" and report.verdict is not Verdict.WALK_BACK
    assert any("headroom" in m for m in check.messages)


@pytest.fixture(scope="module")
def bp_sample() -> AuditReport:
    return audit(SAMPLES / "bp.pt", device="cpu")


def test_a_margin_inside_the_eval_sets_noise_is_borderline(bp_sample: AuditReport) -> None:
    """BP 1.5 pp above a baseline measured elsewhere (unpaired, 4,096 samples: ±2 pp): borderline."""
    supplied = bp_sample.measurements.accuracy - 0.015
    report = audit(SAMPLES / "bp.pt", device="cpu", baseline_accuracy=supplied)
    check = report.check("depth_utility")
    low, high = check.values["margin_interval_pp"]
    assert low < 2.0 < high and check.values["functional"] == "not_assessed"
    assert report.verdict is Verdict.INCOMPLETE and report.exit_code == 3
    assert any(m.startswith("functional part borderline") for m in check.messages)
    clear = audit(SAMPLES / "bp.pt", device="cpu", baseline_accuracy=supplied - 0.05)
    assert clear.check("depth_utility").values["functional"] == "pass"
    far = audit(SAMPLES / "bp.pt", device="cpu", baseline_accuracy=supplied + 0.05)
    assert far.check("depth_utility").values["functional"] == "fail" and far.modes == ["mode_2"]


def test_the_paired_interval_is_narrower_than_the_unpaired_one(bp_sample: AuditReport) -> None:
    """The same eval samples under both models: only the discordant ones carry noise."""
    paired = audit(SAMPLES / "bp.pt", device="cpu", baseline=SAMPLES / "frozen.pt")
    base = paired.baseline
    assert base is not None and base.paired and base.discordant is not None and base.margin_se_pp is not None
    model_only, baseline_only = base.discordant
    n = paired.measurements.samples
    assert 100 * (model_only - baseline_only) / n == pytest.approx(paired.check("depth_utility").values["margin_pp"])
    unpaired = unpaired_se_pp(n, paired.measurements.accuracy, base.accuracy)
    assert base.margin_se_pp < unpaired


TWO_BLOCKS = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.embed = nn.Linear(24, width)
        self.blocks = nn.ModuleList(nn.Linear(width, width) for _ in range(2))
        self.head = nn.Linear(width, 4)

    def forward(self, x, return_hidden=False):
        h = torch.tanh(self.embed(x))
        hidden = [h]
        for block in self.blocks:
            h = torch.tanh(block(h))
            hidden.append(h)
        return (self.head(h), hidden) if return_hidden else self.head(h)
"""


def test_a_module_baseline_is_read_with_the_audited_arch(
    easy: EasyTask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--arch module:… --baseline frozen.pt` with both files bare state dicts of the user's class:
    the baseline is read as the command line says, taken as frozen, and paired with the audited net."""
    module = user_module(tmp_path, "twoblocks", TWO_BLOCKS)
    torch.manual_seed(0)
    trained, frozen = module.Net(), module.Net()
    data = load_file(easy.data)
    for net, params in ((trained, list(trained.parameters())), (frozen, [*frozen.embed.parameters(),
                                                                         *frozen.head.parameters()])):  # fmt: skip
        opt = torch.optim.Adam(params, lr=1e-2)
        for _ in range(20):
            opt.zero_grad()
            F.cross_entropy(net(data["x"]), data["y"]).backward()
            opt.step()
    torch.save(trained.state_dict(), tmp_path / "trained.pt")
    torch.save(frozen.state_dict(), tmp_path / "frozen.pt")
    monkeypatch.chdir(tmp_path)
    code, out, err = run("run", "trained.pt", "--arch", "module:twoblocks:Net", "--method", "bp",
                         "--data", easy.data, "--baseline", "frozen.pt", "--json", "-")  # fmt: skip
    assert code in (1, 3), err
    report = json.loads(out)
    assert report["baseline"]["source"] == "checkpoint" and report["baseline"]["paired"] is True
    assert report["baseline"]["path"] == "frozen.pt"


class Bottleneck(torch.nn.Module):
    """A tanh MLP with a 4-unit layer in the middle: the layer after it is starved of credit under DFA."""

    WIDTHS = (64, 4, 64, 64)

    def __init__(self) -> None:
        super().__init__()
        dims = (24, *self.WIDTHS)
        self.layers = torch.nn.ModuleList(torch.nn.Linear(a, b) for a, b in pairwise(dims))
        self.head = torch.nn.Linear(dims[-1], 10)

    def forward(self, x: torch.Tensor, return_hidden: bool = False) -> object:
        hidden, h = [], x
        for layer in self.layers:
            h = torch.tanh(layer(h))
            hidden.append(h)
        return (self.head(h), hidden) if return_hidden else self.head(h)


def test_a_deep_layer_starved_behind_a_narrow_one_is_named() -> None:
    """DFA (each layer by e · B_l on a detached input, the head by its gradient) on the sample task:
    credit reach passes, but the layer after the 4-unit one stays inside its null band, and the
    finding names it and its narrow input."""
    train, held = load_file(SAMPLES / "train.safetensors"), load_file(SAMPLES / "eval.safetensors")
    x, y = train["x"][:8192].float(), train["y"][:8192].long()
    torch.manual_seed(0)
    net, g = Bottleneck(), torch.Generator().manual_seed(3)
    feedback = {f"layers.{i}": torch.randn(10, w, generator=g) / math.sqrt(w) for i, w in enumerate(net.WIDTHS)}
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(3):
        for idx in torch.randperm(len(y), generator=g).split(64):
            hidden, h = [], x[idx]
            for layer in net.layers:
                h = torch.tanh(layer(h.detach()))
                hidden.append(h)
            logits = net.head(h.detach())
            e = (logits.softmax(-1) - F.one_hot(y[idx], 10)).detach()
            local = sum((h * (e @ feedback[f"layers.{i}"])).sum(-1).mean() for i, h in enumerate(hidden))
            opt.zero_grad()
            (F.cross_entropy(logits, y[idx]) + local).backward()
            opt.step()
    xe, ye = held["x"].float(), held["y"].long()
    batches = [(xe[i : i + 512], ye[i : i + 512]) for i in range(0, len(ye), 512)]
    names = [f"layers.{i}" for i in range(len(net.WIDTHS))]
    report = audit_module(net, batches, method="dfa", feedback=feedback, hidden=names, device="cpu")
    check = report.check("depth_utility")
    assert check.values["credit_reach_status"] == "pass"
    starved = [n for n in check.notes if n.startswith("h2 (layers.2) gets no credit above its null band")]
    assert len(starved) == 1 and "its input h1 (layers.1) is 4 units wide against 64 here: a bottleneck" in starved[0]
    assert report.measurements.layers[2].width == 64 and report.measurements.layers[1].width == 4


def test_a_baseline_no_better_than_chance_is_refused(easy: EasyTask, tmp_path: Path) -> None:
    """A frozen-blocks baseline with a zeroed head (a file, or a cache entry someone edited) is at
    chance, and would make any network's margin look like depth: it is refused as a baseline."""
    bundle = load_bundle(easy.frozen)
    state = {k: torch.zeros_like(v) if k.startswith("head.") else v for k, v in bundle.state_dict.items()}
    fa_audit.save_bundle(tmp_path / "zeroed.pt", _mlp(state), arch="mlp", arch_config=CONFIG, method="frozen",
                         meta={"data": str(easy.data), "seed": 0})  # fmt: skip
    code, _, err = run("run", easy.bp, "--baseline", tmp_path / "zeroed.pt")
    assert code == 2 and "cannot serve as the frozen-blocks baseline" in err and "zeroed.pt" in err


def _mlp(state: dict[str, torch.Tensor]) -> torch.nn.Module:
    model = get_adapter("mlp").build(CONFIG).module
    model.load_state_dict(state)
    return model
