"""Mutation fuzzer for fa-audit's input handling (run on demand, not in CI).

    python tests/fuzz.py --minutes 10 --out /tmp/fa-fuzz

Mutates the sample checkpoints, feedback sidecar, eval data, a thresholds YAML, an
`--arch-config` file, a JSON report (read by `summarize`: bytes, and values set in its
fields) and a fitted baseline's cache entry, and picks hostile output paths, `--rename`
patterns and `--data module:` functions; now and then launches two ranks as torchrun does, one
given settings, files or bad input of its own (both must end alike, exit 2 where they differ), and
audits user layers holding a library's B attribute whose forward may not be their plain twin's
(exit 2 unless it is).
Runs each case in-process, and records a crash
whenever the outcome is not one of the contract's: exit 4, a traceback, an exit 2 whose
message is not at most four lines, any other exit code, a raw control character or a line
starting with `::` on stderr, a changed input file, or a run longer than the timeout.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import torch
from typer.testing import CliRunner

import fa_audit
from fa_audit.api import audit
from fa_audit.cli import app
from fa_audit.report.document import dumps

SAMPLES = Path(__file__).resolve().parents[1] / "sample_checkpoints"
YAML = b"scale_stability: {max_block_growth: 50}\nreference_validity: {min_grad_norm: 1.0e-7}\n"
ARCH_CONFIG = b'{"in_dim": 24, "width": 64, "depth": 4, "num_classes": 10, "mlp_ratio": 2}'
# Text that breaks parsers, bounds and terminals, spliced into the text inputs.
TOKENS = [
    b"&a",
    b"*a",
    b"[",
    b"]",
    b"{",
    b"}",
    b": ",
    b"\n- ",
    b"1e400",
    b"NaN",
    b"-1",
    b"0",
    b"9" * 400,
    b"null",
    b"true",
    b'"',
    b"\x1b]0;t\x07",
    b"\x1b[2J",
    b"\n::error::x\n",
    b"\xff\xfe",
    b"\t",
    b"!!python/object",
]
REGEX = "a.()*+?|{}[]^$\\0123456789,"
DATA_FUNCTIONS = [
    "return [(torch.randn(8, 24), torch.randint(0, 10, (8,)))] * {n}",
    "return [(torch.randn(8, {n}), torch.randint(0, 10, (8,)))]",
    "return [(torch.randn(8, 24).to(torch.{dtype}), torch.randint(0, 10, (8,)).to(torch.{dtype}))]",
    "return [(torch.full((8, 24), float('{special}')), torch.zeros(8, dtype=torch.long))]",
    "return [(torch.randn(8, 24), torch.full((8,), {n}))]",
    "return [(torch.randn({n}, 24), torch.zeros({n}, dtype=torch.long))]",
    "return {{'x': torch.randn(8, 24)}}",
    "return None",
    "raise RuntimeError('{special}')",
    "return iter(lambda: (torch.randn(64, 24), torch.zeros(64, dtype=torch.long)), None)",
    "return [(torch.randn(8, 24),)]",
    "return [[torch.randn(8, 24).numpy(), torch.zeros(8, dtype=torch.long).numpy()]]",
]
OUTPUTS = ["", ".", "missing/r.json", "/proc/fa.json", "/dev/null", "\x1b[2Jr.json", "::error::r.md", "dfa.pt"]


def splice(raw: bytes, rng: random.Random) -> bytes:
    """A text mutation: a hostile token inserted or replacing a span."""
    data = bytearray(raw)
    for _ in range(rng.randint(1, 4)):
        pos = rng.randrange(len(data) + 1)
        data[pos : pos + rng.choice([0, 0, 1, 4])] = rng.choice(TOKENS)
    return bytes(data)


def mutate(raw: bytes, rng: random.Random) -> bytes:
    data = bytearray(raw)
    strategy = rng.choice(["flip", "overwrite", "truncate", "insert", "duplicate", "head", "tail"])
    if strategy == "flip":
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif strategy == "overwrite":
        start = rng.randrange(len(data))
        data[start : start + rng.randint(1, 64)] = rng.randbytes(rng.randint(1, 64))
    elif strategy == "truncate":
        del data[rng.randrange(len(data)) :]
    elif strategy == "insert":
        pos = rng.randrange(len(data))
        data[pos:pos] = rng.randbytes(rng.randint(1, 32))
    elif strategy == "duplicate":
        start = rng.randrange(len(data))
        data[start:start] = data[start : start + rng.randint(1, 256)]
    else:  # headers and zip directories live at the ends: hit them harder
        span = min(len(data), 512)
        base = 0 if strategy == "head" else len(data) - span
        for _ in range(rng.randint(1, 4)):
            data[base + rng.randrange(span)] = rng.randrange(256)
    return bytes(data)


def text_mutant(raw: bytes, rng: random.Random) -> bytes:
    return splice(raw, rng) if rng.random() < 0.6 else mutate(raw, rng)


def field_mutant(report: bytes, rng: random.Random) -> bytes:
    """A report with values set in random fields: thresholds loosened, statuses, numbers."""
    doc = json.loads(report)
    values = [0, -1, 1e308, "pass", "TRUST", None, [], {}, True, 0.5, "fail"]
    for _ in range(rng.randint(1, 4)):
        node, key = doc, None
        path = rng.choice([["config", "depth_utility", "null_z"], ["checks", 2, "status"], ["verdict"], ["exit_code"],
                           ["baseline_accuracy"], ["layers", 1, "cos"], ["layers", 0, "z"], ["accuracy"]])  # fmt: skip
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = rng.choice(values)
    return json.dumps(doc).encode()


def cache_case(rng: random.Random, work: Path, entry: bytes) -> list[str]:
    """A fitted baseline's cache entry, mutated, in a cache directory of random mode."""
    cache = work / "cache"
    cache.mkdir(mode=0o700)
    (cache / ENTRY_NAME).write_bytes(mutate(entry, rng) if rng.random() < 0.8 else b'{"accuracy": 0}')
    cache.chmod(rng.choice([0o700, 0o700, 0o777, 0o755]))
    train = str(SAMPLES / "train.safetensors")
    return ["run", str(SAMPLES / "dfa_penalty.pt"), "--fit-baseline", "--train-data", train, "--cache-dir", str(cache)]


def data_case(rng: random.Random, work: Path) -> list[str]:
    body = rng.choice(DATA_FUNCTIONS).format(
        n=rng.choice([0, 1, 25, -1, 10**6, 2**40]),
        dtype=rng.choice(["bool", "int8", "float16", "complex64", "uint8"]),
        special=rng.choice(["nan", "inf", "\x1b[2J", "::error::x"]),
    )
    (work / "fuzzdata.py").write_text(f"import torch\n\n\ndef batches():\n    {body}\n")
    sys.modules.pop("fuzzdata", None)
    return ["run", str(SAMPLES / "dfa.pt"), "--data", "module:fuzzdata:batches"]


META_VALUES = [0, -1, 10**9, 1e-300, float("nan"), "", "module:evil:f", "mse", "token_cross_entropy", "bce",
               [], {"a": 1}, "\x1b[2J", True, None]  # fmt: skip


def meta_case(rng: random.Random, work: Path) -> list[str]:
    """A checkpoint whose meta sets what a file may not: the fitted baseline's budget, the loss head."""
    from fa_audit.adapt import build_model
    from fa_audit.adapt.fit_keys import fit_bundle
    from fa_audit.loading import load_bundle

    bundle = fit_bundle(load_bundle(SAMPLES / "dfa_penalty.pt"))
    model = build_model(bundle).module
    keys = ["epochs", "lr", "weight_decay", "batch_size", "loss", "seed", "data", "train_data"]
    meta = {**bundle.meta, **{k: rng.choice(META_VALUES) for k in rng.sample(keys, rng.randint(1, 4))}}
    meta["data"] = meta["data"] if isinstance(meta.get("data"), str) else "eval.safetensors"
    for name in ("eval.safetensors", "train.safetensors"):
        shutil.copy(SAMPLES / name, work / name)
    fa_audit.save_bundle(work / "meta.pt", model, arch=bundle.arch, arch_config=bundle.arch_config, method="dfa",
                         feedback=bundle.feedback, meta=meta)  # fmt: skip
    extra = rng.choice([[], ["--fit-baseline", "--no-cache"], ["--loss", rng.choice(["mse", "bce", "", "huber"])]])
    return ["run", str(work / "meta.pt"), "--max-samples", "256", *extra]


def loss_case(rng: random.Random, work: Path) -> list[str]:
    """The regression and language-model samples on mutated targets, under a head chosen at random."""
    pairs = [("regression_dfa.pt", "regression_eval.safetensors"), ("gpt_mini_dfa.pt", "lm_eval.safetensors")]
    sample, data = rng.choice(pairs)
    target = work / "targets.safetensors"
    target.write_bytes(mutate((SAMPLES / data).read_bytes(), rng))
    head = rng.choice([[], ["--loss", "mse"], ["--loss", "token_cross_entropy"], ["--loss", "bce"]])
    return ["run", str(SAMPLES / sample), "--data", str(target), "--max-samples", "64", *head]


LAYOUT_OPTIONS = [
    ["--batch-dim", "1"], ["--batch-dim", "2"], ["--batch-dim", "3"], ["--batch-dim", "-1"], ["--batch-dim", "x"],
    ["--feedback-attr", "B"], ["--feedback-attr", "weight"], ["--feedback-attr", "weight_fa"],
    ["--feedback-attr", "__class__"], ["--feedback-attr", "a.b"], ["--feedback-attr", "\x1b[2J"],
    ["--hidden", "blocks.*"], ["--hidden", "*"], ["--hidden", "**"], ["--hidden", "[" * 40],
    ["--hidden", "embed,embed"],
    ["--bp-layers", "head"], ["--bp-layers", "*"], ["--deep", "*"], ["--convention", "tinydfa"],
    ["--method", "fa"], ["--method", "drtp"], ["--method", "bp"], ["--loss", "mse"], ["--loss", "token_cross_entropy"],
]  # fmt: skip
"""How a checkpoint is read (the layout options), combined at random on the samples."""


def layout_case(rng: random.Random) -> list[str]:
    sample = rng.choice(["dfa.pt", "fa_mlp.pt", "small_cnn_dfa.pt", "vit_mini_dfa.pt", "gpt_mini_dfa.pt"])
    picked = [flag for option in rng.sample(LAYOUT_OPTIONS, rng.randint(1, 4)) for flag in option]
    return ["run", str(SAMPLES / sample), "--max-samples", "64", *picked]


HOSTILE_NAMES = ["--data=module:evil:f.pt", "--arch=module:evil:Net.pt", "-q.pt", "--json=-.pt", "a\nb.pt",
                 "\x1b]0;t\x07.pt", "::error::x.pt", "module:evil:f.pt"]  # fmt: skip
"""Checkpoint file names a pull request can commit, as a CI hook passes them: after ``--``."""


def names_case(rng: random.Random, work: Path) -> list[str]:
    (work / "evil.py").write_text("import os\nos._exit(0)\n")  # imported only if a name became code
    name = rng.choice(HOSTILE_NAMES)
    shutil.copy(SAMPLES / rng.choice(["dfa.pt", "bp.pt"]), work / name)
    shutil.copy(SAMPLES / "eval.safetensors", work / "eval.safetensors")
    return ["run", "--max-samples", "64", "--", str(work / name)]


RANK_VARIANTS: list[Callable[[Path], list[str]]] = [
    lambda w: [],
    lambda w: ["--seed", "1"],
    lambda w: ["--max-samples", "256"],
    lambda w: ["--method", "fa"],
    lambda w: ["--loss", "mse"],
    lambda w: ["--batch-size", "128"],
    lambda w: ["--baseline", str(SAMPLES / "frozen.pt")],
    lambda w: ["--config", str(w / "t.yaml")],
    lambda w: ["--data", str(w / "other.safetensors")],
    lambda w: ["--arch-config", str(w / "arch.json")],
    lambda w: ["--hidden", "blocks.*"],
    lambda w: ["--quiet"],
]
"""What one rank may be given apart from the others: a setting, a file, or a bad input of its own."""
SAME_FOR_ALL = {"--quiet"}
"""Options that do not change what is audited (a rank given one still audits what the others do)."""


def ranks_outcome(rng: random.Random, work: Path, timeout: int) -> tuple[int, str, bool]:
    """Two ranks launched as torchrun launches them, rank 1 with options of its own: both end with
    the same code, and any difference in what they audit is exit 2 on both (never a merged
    report, a hang or exit 4). Returns rank 0's code, the ranks' stderr and whether it broke."""
    (work / "t.yaml").write_bytes(text_mutant(YAML, rng) if rng.random() < 0.5 else b"null_calibration: {draws: 30}\n")
    (work / "arch.json").write_bytes(text_mutant(ARCH_CONFIG, rng))
    data = (SAMPLES / "eval.safetensors").read_bytes()
    (work / "other.safetensors").write_bytes(mutate(data, rng) if rng.random() < 0.5 else data)
    sample = rng.choice(["dfa.pt", "dfa_penalty.pt"])
    own = [flag for variant in rng.sample(RANK_VARIANTS, rng.randint(1, 2)) for flag in variant(work)]
    args = [["run", str(SAMPLES / sample), "--max-samples", "512", "--device", "cpu", "--json", "-"]] * 2
    args[1] = [*args[1], *own]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in range(2):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2",
               "RANK": str(rank), "LOCAL_RANK": str(rank), "OMP_NUM_THREADS": "1"}  # fmt: skip
        procs.append(subprocess.Popen([sys.executable, "-m", "fa_audit", *args[rank]], env=env, text=True, cwd=work,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))  # fmt: skip
    codes, errs = [], []
    for proc in procs:
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for other in procs:
                other.kill()
            return -1, f"no answer within {timeout} s from ranks {args!r}", True
        codes.append(proc.returncode)
        errs.append(err)
    err = "".join(errs)
    other = work / "other.safetensors"
    same_bytes = own == ["--data", str(other)] and other.read_bytes() == data
    same = set(own) <= SAME_FOR_ALL or same_bytes
    broke = codes[0] != codes[1] or codes[0] not in (0, 1, 2, 3) or "Traceback" in err or (not same and codes[0] != 2)
    return codes[0], f"args {args!r}\n{err}", broke


TWIN_FORWARDS = {
    "honest": "nn.functional.linear(x, self.weight, self.bias)",
    "relu_inside": "torch.relu(nn.functional.linear(x, self.weight, self.bias))",
    "binarised": "nn.functional.linear(x, torch.sign(self.weight), self.bias)",
    "scaled": "{scale} * nn.functional.linear(x, self.weight, self.bias)",
    "shifted": "nn.functional.linear(x, self.weight, self.bias) + {scale}",
    "noisy": "nn.functional.linear(x, self.weight, self.bias) + 1e-3 * torch.randn_like(x[:, :1])",
    "uses_b": "nn.functional.linear(x, self.{attr}, self.bias)",
}
"""A layer holding a library's B attribute, with what its forward computes: only "honest" is
the nn.Linear its plain twin would be (a scale of 1 and a shift of 0 are honest too)."""
TWIN_NET = """
import torch
from torch import nn


class Layer(nn.Linear):
    def __init__(self, i, o):
        super().__init__(i, o)
        self.{attr} = nn.Parameter(torch.randn(o, i) / i ** 0.5, requires_grad=False)

    def forward(self, x):
        return {forward}


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([Layer(24, 64), Layer(64, 64)])
        self.head = Layer(64, 10)

    def forward(self, x):
        for layer in self.layers:
            x = torch.tanh(layer(x))
        return self.head(x)
"""


def twins_outcome(rng: random.Random, work: Path) -> tuple[int, str, bool]:
    """A user's network whose layers hold a library's B attribute, audited through their plain
    twins: a forward that is not the twin's (a ReLU inside, sign(W), a scale, noise, B in the
    forward) must be refused (exit 2), an honest one audited. Returns the code, stderr, whether it broke."""
    attr = rng.choice(["weight_fa", "weight_backward", "B"])
    kind = rng.choice(list(TWIN_FORWARDS))
    scale = rng.choice([1, 0, 2, -1, 1.001, 1.00001])
    forward = TWIN_FORWARDS[kind].format(scale=scale, attr=attr)
    # within the twin check's tolerance (relative 1e-4 of the output's scale) a forward is the twin's
    honest = kind == "honest" or (kind == "scaled" and abs(scale - 1) < 1e-4) or (kind == "shifted" and scale == 0)
    module = f"twins{rng.randrange(10**9)}"  # a fresh name: the import system caches modules by name
    (work / f"{module}.py").write_text(TWIN_NET.format(attr=attr, forward=forward))
    torch.manual_seed(rng.randrange(1000))
    net = __import__(module).Net()
    torch.save(net.state_dict(), work / "twins.pt")
    hidden = ["--hidden", "layers.0", "--hidden", "layers.1"]
    named = ["--feedback-attr", "B"] if attr == "B" else []
    args = ["run", str(work / "twins.pt"), "--arch", f"module:{module}:Net", "--method", "fa", *hidden, *named,
            "--data", str(SAMPLES / "eval.safetensors"), "--max-samples", "256", "--json", "-"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    code, err = result.exit_code, result.stderr
    broke = code not in ((0, 1, 3) if honest else (2,)) or "Traceback" in err
    return code, f"{kind} {attr} scale={scale}\n{err}", broke


def rename_case(rng: random.Random) -> list[str]:
    pattern = "".join(rng.choice(REGEX) for _ in range(rng.randint(1, 24)))
    replacement = rng.choice(["", "x", "\\1", "blocks."])
    return ["run", str(SAMPLES / "dfa.pt"), "--rename", f"{pattern}={replacement}"]


def case(rng: random.Random, work: Path, report: bytes, entry: bytes) -> list[str]:
    """Write one mutant into ``work`` and return the CLI arguments that read it."""
    for stale in work.iterdir():
        if stale.is_dir() and not stale.is_symlink():
            stale.chmod(0o700)
            shutil.rmtree(stale)
        else:
            stale.unlink()
    targets = ["dfa.pt", "fa_mlp.pt", "dfa.safetensors", "sidecar", "eval", "yaml", "arch", "report", "out", "fields",
               "cache", "data", "rename", "meta", "loss", "layout", "names"]  # fmt: skip
    target = rng.choice(targets)
    if target == "fields":
        (work / "r.json").write_bytes(field_mutant(report, rng))
        return ["summarize", str(work / "r.json")]
    built: dict[str, Callable[[], list[str]]] = {
        "cache": lambda: cache_case(rng, work, entry),
        "data": lambda: data_case(rng, work),
        "rename": lambda: rename_case(rng),
        "meta": lambda: meta_case(rng, work),
        "loss": lambda: loss_case(rng, work),
        "layout": lambda: layout_case(rng),
        "names": lambda: names_case(rng, work),
    }
    if target in built:
        return built[target]()
    eval_path = work / "eval.safetensors"
    shutil.copy(SAMPLES / "eval.safetensors", eval_path)
    if target == "yaml":
        (work / "t.yaml").write_bytes(text_mutant(YAML, rng))
        return ["run", str(SAMPLES / "dfa.pt"), "--config", str(work / "t.yaml")]
    if target == "arch":
        (work / "arch.json").write_bytes(text_mutant(ARCH_CONFIG, rng))
        return ["run", str(SAMPLES / "dfa.safetensors"), "--arch-config", str(work / "arch.json")]
    if target == "report":
        (work / "r.json").write_bytes(text_mutant(report, rng))
        return ["summarize", str(work / "r.json")]
    if target == "out":
        shutil.copy(SAMPLES / "dfa.pt", work / "dfa.pt")
        option = rng.choice(["--json", "--markdown", "--plot"])
        return ["run", str(work / "dfa.pt"), option, rng.choice(OUTPUTS), *rng.choice([[], ["--format", "github"]])]
    if target == "eval":
        eval_path.write_bytes(mutate(eval_path.read_bytes(), rng))
        return ["run", str(SAMPLES / "dfa_penalty.pt"), "--data", str(eval_path)]
    name = "dfa.safetensors" if target == "sidecar" else target
    shutil.copy(SAMPLES / name, work / name)
    if name == "dfa.safetensors":
        shutil.copy(SAMPLES / "dfa.feedback.safetensors", work / "dfa.feedback.safetensors")
    victim = work / ("dfa.feedback.safetensors" if target == "sidecar" else name)
    victim.write_bytes(mutate(victim.read_bytes(), rng))
    return ["run", str(work / name)]


ENTRY_NAME = "entry.safetensors"


def _fitted_entry(out: Path) -> bytes:
    """A true cache entry of dfa_penalty.pt's fitted baseline; its name is the key's."""
    global ENTRY_NAME
    cache = out / "true-cache"
    audit(SAMPLES / "dfa_penalty.pt", fit_baseline=True, train_data=SAMPLES / "train.safetensors", cache_dir=cache,
          max_samples=512, device="cpu")  # fmt: skip
    found = next(cache.glob("*.safetensors"))
    ENTRY_NAME = found.name
    return found.read_bytes()


def _digest(folder: Path) -> dict[Path, str]:
    """The inputs' hashes; a cache directory of the user's own is the tool's to rewrite."""
    cache = folder / "cache"
    own = cache.is_dir() and not cache.stat().st_mode & 0o022
    files = [f for f in folder.rglob("*") if f.is_file() and not (own and f.parent == cache)]
    return {f: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=Path("fuzz-crashes"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=int, default=60, help="seconds before a run counts as a hang")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = random.Random(args.seed)
    work = (args.out / "work").resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)  # relative output paths land here
    report = dumps(audit(SAMPLES / "dfa.pt", max_samples=512, device="cpu")).encode()
    entry = _fitted_entry(args.out.resolve())
    sys.path.insert(0, str(work))  # --data module:fuzzdata
    runner = CliRunner()
    codes: Counter[str] = Counter()
    crashes = 0
    deadline = time.monotonic() + 60 * args.minutes

    def hang(signum: int, frame: object) -> None:
        raise TimeoutError

    signal.signal(signal.SIGALRM, hang)
    tried = 0
    while time.monotonic() < deadline:
        if rng.random() < 1 / 10:  # outcomes with an expectation of their own: several processes, plain twins
            tried += 1
            several = rng.random() < 0.5
            code, err, broke = ranks_outcome(rng, work, args.timeout) if several else twins_outcome(rng, work)
            codes[f"{'ranks' if several else 'twins'} {code}"] += 1
            if broke:
                crashes += 1
                keep = args.out / f"crash-{crashes:04d}"
                shutil.copytree(work, keep)
                (keep / "outcome.txt").write_text(f"exit {code}\n{err!r}")
            continue
        cli_args = case(rng, work, report, entry)
        if cli_args[0] == "run":
            cli_args += ["--max-samples", "512"] + ([] if {"--json", "--format"} & set(cli_args) else ["--json", "-"])
        before = _digest(work)
        tried += 1
        signal.alarm(args.timeout)
        try:
            result = runner.invoke(app, cli_args)
            code, err = result.exit_code, result.stderr
        except TimeoutError:
            code, err = -1, f"no answer within {args.timeout} s"
        finally:
            signal.alarm(0)
        codes[str(code)] += 1
        lines = len(err.strip().splitlines())
        raw = any(ch in err for ch in "\x1b\x07\r") or any(line.startswith("::") for line in err.splitlines())
        touched = {p: h for p, h in _digest(work).items() if p in before} != before
        if code not in (0, 1, 2, 3) or "Traceback" in err or (code == 2 and not 1 <= lines <= 4) or raw or touched:
            crashes += 1
            keep = args.out / f"crash-{crashes:04d}"
            shutil.copytree(work, keep)
            (keep / "outcome.txt").write_text(f"exit {code}\ninputs changed {touched}\nargs {cli_args!r}\n{err!r}")
        if tried % 200 == 0:
            print(f"{tried} inputs, exit codes {dict(codes)}, crashes {crashes}", flush=True)
    print(f"done: {tried} inputs in {args.minutes:g} min, exit codes {dict(codes)}, crashes {crashes}")


if __name__ == "__main__":
    main()
