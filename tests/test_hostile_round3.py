"""Hostile inputs, round 3: the surface added since round 2 (conventions, containers,
--rename, --hidden, --deep, --data module:, the baseline cache, summarize), each cause a real
`fa-audit` process under the 2 GB address-space limit and the hang timeout of round 2.
Each ends in its exit code with one sentence naming the file or option, no traceback, and
every input byte-identical. The cache and summarize have their own files
(test_hostile_cache.py, test_hostile_reports.py); audit_module's arguments are API tests
(test_audit_module_arguments.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from fa_audit import ExitCode

from .ahead import ahead_of
from .conftest import SAMPLES
from .test_hostile_processes import DFA, Case, Cases, _bundle, _clean, _digest, _run, _started, fa_audit

EVAL = ["--data", str(SAMPLES / "eval.safetensors"), "--max-samples", "64"]


def _dkp_beside(bundle: dict[str, object], same: bool) -> None:
    """DKP entries in the state dict beside the bundle's own feedback field."""
    feedback: dict[str, torch.Tensor] = bundle["feedback"]  # type: ignore[assignment]
    for module, b in feedback.items():
        bundle["state_dict"][f"{module}_dfa.backward_weights"] = b.clone() if same else -b  # type: ignore[index]


def _dkp_with_sidecar(tmp: Path) -> Path:
    """A DKP checkpoint (no feedback field) with a sidecar beside it that holds another B."""

    def edit(bundle: dict[str, object]) -> None:
        _dkp_beside(bundle, same=True)
        save_file({k: -v.float() for k, v in bundle.pop("feedback").items()}, tmp / "ckpt.feedback.safetensors")  # type: ignore[attr-defined]

    return _bundle(tmp, edit)


def _drtp_collision(bundle: dict[str, object]) -> None:
    """The DRTP FA wrapper's layout for one layer, beside a stray weight of the unwrapped name."""
    state: dict[str, torch.Tensor] = bundle["state_dict"]  # type: ignore[assignment]
    state["blocks.0.fc1.module.weight"] = torch.zeros_like(state["blocks.0.fc1.weight"])
    state["blocks.0.fc1.fixed_fb_weights"] = torch.randn_like(state["blocks.0.fc1.weight"])


def _user(tmp: Path, name: str, body: str) -> str:
    (tmp / f"{name}.py").write_text(body)
    return name


DETACHED = """
import torch
from torch import nn

class Pair(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(24, 32)

    def forward(self, x):
        h = torch.tanh(self.fc(x))
        return h.detach(), h

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = Pair(), nn.Linear(32, 32), nn.Linear(32, 10)

    def forward(self, x):
        return self.head(torch.tanh(self.b(self.a(x)[1])))
"""

WIDE = """
from torch import nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.Sequential(nn.Linear(24, 16), *(nn.Identity() for _ in range(10000)))
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        return self.head(self.blocks(x))
"""

DATA = """
import torch
from safetensors.torch import load_file

def empty():
    return [(torch.zeros(0, 24), torch.zeros(0, dtype=torch.long))]

def endless():
    x, y = torch.randn(256, 24), torch.zeros(256, dtype=torch.long)
    while True:
        yield x, y
"""


def _python(tmp: Path, code: str) -> int:
    return subprocess.run([sys.executable, "-c", code], cwd=tmp, timeout=120).returncode


def _state(tmp: Path, module: str) -> Path:
    assert _python(tmp, f"import torch, {module}; torch.save({module}.Net().state_dict(), 'net.pt')") == 0
    return tmp / "net.pt"


def _module_model(tmp: Path, name: str, body: str, *hidden: str) -> list[str]:
    module = _user(tmp, name, body)
    net = _state(tmp, module)
    return [str(net), "--arch", f"module:{module}:Net", "--arch-config", "{}", "--method", "bp",
            *[a for h in hidden for a in ("--hidden", h)], *EVAL]  # fmt: skip


CORPUS: dict[str, Callable[[Path], Case]] = {
    # 4. silent wrong cosines from ambiguous feedback
    "DKP entries beside a differing feedback field": lambda t: Case(
        [_bundle(t, lambda b: _dkp_beside(b, same=False)), *EVAL], "ckpt.pt", "offers feedback twice"
    ),
    "a sidecar beside a convention checkpoint": lambda t: Case(
        [_dkp_with_sidecar(t), *EVAL], "ckpt.pt", "the dkp entries in its state dict and"
    ),
    "DRTP unwrapping over a stray weight": lambda t: Case(
        [_bundle(t, _drtp_collision), *EVAL], "ckpt.pt", "'blocks.0.fc1.weight', the name the wrapped"
    ),
    "--method contradicting the recorded method": lambda t: Case(
        [SAMPLES / "dfa_penalty.pt", "--method", "bp", "--baseline-accuracy", "0.1", *EVAL],
        "dfa_penalty.pt",
        "trained with 'dfa', but --method 'bp'",
    ),
    # 5. hangs and exit 4 from input
    "--rename that backtracks exponentially": lambda t: Case(
        [
            _bundle(t, lambda b: b["state_dict"].__setitem__("a" * 40 + "!", torch.zeros(1))),  # type: ignore[index]
            "--rename",
            "^(a|a)*$=x",
            *EVAL,
        ],
        "--rename",
        "exponential time",
    ),
    "--rename with a repeat count of 2**32 - 1": lambda t: Case(
        [DFA, "--rename", "a{4294967295}=b", *EVAL], "--rename", "not a valid rule"
    ),
    "--hidden module whose tuple output is detached": lambda t: Case(
        _module_model(t, "pairnet", DETACHED, "a", "b"), "h0 (a)", "detached from the graph"
    ),
    "--deep holding every parameter": lambda t: Case(
        [
            SAMPLES / "dfa_penalty.pt",
            "--fit-baseline",
            "--train-data",
            SAMPLES / "train.safetensors",
            "--deep",
            "*",
            "--no-cache",
            *EVAL,
        ],
        "--deep",
        "nothing to train",
    ),
    "10000 hidden modules": lambda t: Case(
        _module_model(t, "widenet", WIDE, "blocks.*"), "--hidden", "at most 512 hidden states"
    ),
    "--data module: yielding zero samples": lambda t: Case(
        [DFA, "--data", f"module:{_user(t, 'userdata', DATA)}:empty"], "module:userdata:empty", "yields no samples"
    ),
    "--data module: that never ends": lambda t: Case(
        [DFA, "--data", f"module:{_user(t, 'userdata', DATA)}:endless"],
        "module:userdata:endless",
        "MiB of samples",
    ),
    # 7. words that are true
    "a whole pickled model in a folder": lambda t: Case([_pickled_model(t)], "models/whole.pt", "torch.load('"),
}


def _pickled_model(tmp: Path) -> Path:
    """A whole model whose layer keeps its B as a plain attribute (the state dict leaves it out)."""
    (tmp / "models").mkdir()
    source = (
        "import torch\nfrom torch import nn\n\nclass Whole(nn.Linear):\n"
        "    def __init__(self, *args):\n        super().__init__(*args)\n"
        "        self.weight_fa = torch.randn(self.weight.shape)\n"
    )
    _user(tmp, "wholenet", source)
    _python(tmp, "import torch, wholenet; torch.save(wholenet.Whole(2, 2), 'models/whole.pt')")
    return tmp / "models" / "whole.pt"


corpus = ahead_of("test_round_3_input_in_a_bounded_process", _started(CORPUS, "run"), _run)


@pytest.mark.parametrize("name", CORPUS.keys())
def test_round_3_input_in_a_bounded_process(name: str, corpus: Cases) -> None:
    started, result = corpus.get(name)
    case = started.case
    assert result.returncode == case.code, result.stderr
    _clean(result.stderr + result.stdout)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert case.blame in result.stderr and case.phrase in result.stderr, result.stderr
    after = _digest([started.folder, SAMPLES])
    assert {p: h for p, h in after.items() if p in started.before} == started.before
    assert set(after) <= set(started.before) | {p for p in after if p.suffix == ".pyc"}


def test_the_pickle_one_liner_runs_where_the_audit_ran(tmp_path: Path) -> None:
    """Pasted as printed, from the folder the audit ran in, the re-save command works."""
    path = _pickled_model(tmp_path)
    err = fa_audit("run", "models/whole.pt", cwd=tmp_path).stderr
    command = err.split('python -c "', 1)[1].rsplit('"', 1)[0]
    assert _python(tmp_path, command) == 0
    saved = torch.load(path.parent / "whole.state_dict.pt", weights_only=True)
    assert set(saved) == {"weight", "bias", "weight_fa"}  # the plain-attribute B is kept
    assert "state_dict() leaves out" in err


def test_identical_feedback_sources_are_read_once(tmp_path: Path) -> None:
    """The DKP entries and the feedback field agree: the audit runs and says so once."""
    ckpt = _bundle(tmp_path, lambda b: _dkp_beside(b, same=True))
    result = fa_audit("run", ckpt, *EVAL, "--json", tmp_path / "r.json", "--quiet", cwd=tmp_path)
    assert result.returncode in (ExitCode.WALK_BACK, ExitCode.INCOMPLETE), result.stderr
    notes = json.loads((tmp_path / "r.json").read_text())["notes"]
    assert sum("the same feedback is also in its feedback field: read once" in n for n in notes) == 1
