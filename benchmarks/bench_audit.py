"""How much an audit costs against the physical floor (one forward+backward pass), its
peak memory against the number of eval samples, and start-up time. Whole processes,
alternated, medians reported.

    python benchmarks/bench_audit.py [--samples 32768] [--small 4096] [--repeats 5] [--device cpu]
                                     [--method dfa] [--arch CASE] [--no-memory] [--in-process] [--slope]

--in-process: the same two commands called inside this process (no `import torch` in either: what a
notebook or a training loop pays), alternated, on --threads threads (default 1; 0: torch's default); no
memory, no start-up times.

--slope: also times both at --small, and fits time = fixed + per-sample cost through the two sizes: the
audit's cost per batch against the plain pass's, and its fixed cost beyond the plain pass's.

--method takes dfa, drtp and the FA family (fa, kp, usf, brsf, frsf, sign_symmetry).

Models, trained by nobody (random init, random feedback: the cost does not depend on the
weights), 10 classes; --arch picks the case:
  resmlp             width 256, depth 4 (mlp_ratio 4), in_dim 64
  small_cnn          width 32, depth 4, on 3x16x16 images
  vit_mini           dim 64, depth 4, 4 heads, patches 4x4 of 3x16x16 images (16 tokens)
  vit_128            dim 128, depth 4, 4 heads, patches 4x4 of 3x32x32 images (64 tokens)
  resnet18_cifar     ResNet-18 in torchvision's layout (benchmarks/resnet.py), 3x3 stem, 3x32x32
                     images (layer1 64x32x32), hidden states layer1..4 by --hidden
  resnet18_imagenet  the same with the 7x7 stride-2 stem and max-pool, on 3x64x64 images
  gpt_mini           the causal language model (vocab 256, context 64, dim 64, depth 4, 4 heads) on
                     random token ids, the token_cross_entropy head, DFA per token
  biotorch_lenet     BioTorch's LeNet-CIFAR built by BioTorch's own code (benchmarks/biotorch_lenet.py),
                     saved as its users save it; needs biotorch (pip install --no-deps biotorch==0.0.16)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from fa_audit import save_bundle
from fa_audit.methods import get_method
from model_adapters import AdaptedModel, get_adapter
from model_adapters.hooks import hidden_by_hooks

HERE = Path(__file__).resolve().parent
RESNET = "module:resnet:ResNet18"  # benchmarks/resnet.py, imported from this folder
HOOKED = ["layer1", "layer2", "layer3", "layer4"]


@dataclass(frozen=True)
class Case:
    arch: str
    config: dict[str, Any]
    input_shape: tuple[int, ...]
    hidden: list[str] = field(default_factory=list)
    """--hidden, for a user's module."""
    state_alone: bool = False
    """Saved as its library's users save it, the state dict alone: read with --arch and
    --arch-config (and --method)."""
    vocab: int = 0
    """A language model's vocabulary: x and y are token ids [N, T] (input_shape (T,)), the loss
    head token_cross_entropy, and a DFA matrix [vocab, dim] shared by every position."""

    def plain_options(self) -> list[str]:
        """What the plain pass's command line adds for this case."""
        hidden = [f"--hidden={name}" for name in self.hidden]
        return (
            [*hidden, f"--arch={self.arch}", f"--arch-config={json.dumps(self.config)}"] if self.state_alone else hidden
        )

    def audit_options(self, method: str) -> list[str]:
        """What the audit's command line adds: the plain pass's, the method of a state dict
        alone, and --arch to trust a bundle that names our own module."""
        if self.state_alone:
            return [*self.plain_options(), f"--method={method}"]
        return [*self.plain_options(), *([f"--arch={self.arch}"] if self.arch.startswith("module:") else [])]


VIT = {"in_channels": 3, "patch_size": 4, "depth": 4, "heads": 4, "num_classes": 10}
CASES = {
    "resmlp": Case("resmlp", {"in_dim": 64, "width": 256, "depth": 4, "num_classes": 10}, (64,)),
    "resmlp_67m": Case("resmlp", {"in_dim": 64, "width": 1024, "depth": 16, "num_classes": 10, "mlp_ratio": 2}, (64,)),
    "gpt_mini": Case("gpt_mini", {"vocab": 256, "context": 64, "dim": 64, "depth": 4, "heads": 4}, (64,), vocab=256),
    "small_cnn": Case(
        "small_cnn", {"in_channels": 3, "image_size": 16, "width": 32, "depth": 4, "num_classes": 10}, (3, 16, 16)
    ),
    "vit_mini": Case("vit_mini", {**VIT, "image_size": 16, "dim": 64}, (3, 16, 16)),
    "vit_128": Case("vit_mini", {**VIT, "image_size": 32, "dim": 128}, (3, 32, 32)),  # 64 tokens
    "resnet18_cifar": Case(RESNET, {"num_classes": 10, "stem": "cifar"}, (3, 32, 32), HOOKED),
    "resnet18_imagenet": Case(RESNET, {"num_classes": 10, "stem": "imagenet"}, (3, 64, 64), HOOKED),
    "biotorch_lenet": Case(
        "module:biotorch_lenet:BioLeNet",
        {"kind": "fa"},
        (3, 32, 32),
        ["module.relu1", "module.relu2", "module.relu3", "module.relu4"],
        state_alone=True,
    ),
}
METHODS = ["dfa", "drtp", "fa", "kp", "usf", "brsf", "frsf", "sign_symmetry"]
MAXRSS = (
    "import resource, runpy, sys\n"
    "target, sys.argv = sys.argv[1], sys.argv[1:]\n"
    "try:\n"
    "    if target.endswith('.py'):\n        runpy.run_path(target, run_name='__main__')\n"
    "    else:\n        runpy.run_module(target, run_name='__main__')\n"
    "except SystemExit:\n    pass\n"
    "import torch\n"
    "cuda = torch.cuda.max_memory_allocated() if torch.cuda.is_initialized() else 0\n"
    "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, cuda, file=sys.stderr)"
)
"""Runs a module (fa_audit) or a script (plain_pass.py) with its arguments and prints its peak memory."""


def hidden_states(model: AdaptedModel, case: Case, x: torch.Tensor) -> list[torch.Tensor]:
    if case.hidden:
        return hidden_by_hooks(model.module, tuple(case.hidden), x)[1]
    return model.forward_hidden(x)[1]


def make_inputs(folder: Path, samples: list[int], method: str = "dfa", arch: str = "resmlp") -> Path:
    case = CASES[arch]
    sys.path.insert(0, str(HERE))
    model = get_adapter(case.arch).build(case.config, seed=0)
    g = torch.Generator().manual_seed(0)
    kind = get_method(method).feedback_kind
    if kind == "hidden" and case.vocab:
        dim = case.config["dim"]
        feedback = {n: torch.randn(case.vocab, dim, generator=g) for n in model.hidden_modules}
    elif kind == "hidden":
        with torch.no_grad():
            hidden = hidden_states(model, case, torch.zeros(1, *case.input_shape))
        names = case.hidden or model.hidden_modules
        feedback = {n: torch.randn(10, h[0].numel(), generator=g) for n, h in zip(names, hidden, strict=True)}
    else:  # FA family: one B per Linear or Conv, of its weight's shape (sign methods derive theirs)
        layers = dict(model.module.named_modules())
        feedback = {n: torch.randn(layers[n].weight.shape, generator=g) * 0.05 for n in model.linear_layers()}
        if method == "frsf":  # frSF persists the magnitudes |M| its signs multiply
            feedback = {n: b.abs() for n, b in feedback.items()}
        feedback = feedback if get_method(method).needs_feedback else {}
    ckpt = folder / "bench.pt"
    if case.state_alone:  # the library's own layers hold their feedback (BioTorch's weight_backward)
        torch.save(model.module.state_dict(), ckpt)
    else:
        meta = {"loss": "token_cross_entropy"} if case.vocab else {}
        save_bundle(
            ckpt, model.module, arch=case.arch, arch_config=case.config, method=method, feedback=feedback, meta=meta
        )
    for n in samples:
        if case.vocab:
            tokens = torch.randint(0, case.vocab, (n, *case.input_shape), generator=g)
            save_file({"x": tokens, "y": tokens.roll(-1, 1).contiguous()}, folder / f"eval_{n}.safetensors")
            continue
        save_file(
            {"x": torch.randn(n, *case.input_shape, generator=g), "y": torch.randint(0, 10, (n,), generator=g)},
            folder / f"eval_{n}.safetensors",
        )
    return ckpt


def timed(cmd: list[str], cwd: Path = HERE, env: dict[str, str] | None = None) -> float:
    """Seconds the command took, run from ``cwd`` (this folder: where a ``module:resnet`` arch imports);
    an audit refused or failed (exit 2 or more) would time nothing, and stops the benchmark."""
    start = time.perf_counter()
    done = subprocess.run(
        cmd, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=cwd, env=env, text=True
    )
    if done.returncode not in (0, 1, 3):
        raise SystemExit(f"{' '.join(cmd[:4])} … exited {done.returncode}: {done.stderr.strip()[-400:]}")
    return time.perf_counter() - start


def in_process_pairs(audit_args: list[str], plain_args: list[str], repeats: int) -> list[tuple[float, float]]:
    """(plain pass, audit) seconds, ``repeats`` alternated pairs after one warm pair, both called
    here: benchmarks/plain_pass.py's ``main`` and the CLI's typer app, its printing discarded."""
    import plain_pass

    from fa_audit.cli import app

    def plain() -> float:
        sys.argv = ["plain_pass.py", *plain_args]
        start = time.perf_counter()
        plain_pass.main()
        return time.perf_counter() - start

    def audit() -> float:
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
            code = app(audit_args, standalone_mode=False)
        if code not in (None, 0, 1, 3):
            raise SystemExit(f"the audit exited {code}")
        return time.perf_counter() - start

    plain(), audit()  # warm: the first calls import and allocate
    return [(plain(), audit()) for _ in range(repeats)]


def peak_memory_mb(args: list[str], target: str = "fa_audit") -> tuple[float, float]:
    """Peak resident host memory and peak CUDA memory allocated (0 on CPU), in MB, of
    ``target`` (a module, or a script's path) run with ``args``."""
    cmd = [sys.executable, "-c", MAXRSS, target, *args]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=HERE)
    rss_kb, cuda_bytes = out.stderr.strip().splitlines()[-1].split()
    return int(rss_kb) / 1024, int(cuda_bytes) / 2**20


def _slope(
    plain_s: list[float], audit_s: list[float], small_s: list[tuple[float, float]], samples: int, small: int
) -> dict[str, float]:
    """Time as fixed + per-sample cost, fitted through the medians at two eval sizes: the audit's
    cost per batch against the plain pass's (the ratio a large eval set tends to), and what the
    audit pays once beyond it. Steadier than one size's ratio on a shared host, where the two
    sizes' fixed parts (starting python, importing torch) cancel."""
    plain_small, audit_small = (statistics.median(t[i] for t in small_s) for i in (0, 1))
    plain_big, audit_big = statistics.median(plain_s), statistics.median(audit_s)
    per_sample_plain = (plain_big - plain_small) / (samples - small)
    per_sample_audit = (audit_big - audit_small) / (samples - small)
    fixed = (audit_small - per_sample_audit * small) - (plain_small - per_sample_plain * small)
    return {
        "small_plain_pass_s": plain_small,
        "small_audit_s": audit_small,
        "per_batch_ratio": per_sample_audit / per_sample_plain,
        "fixed_over_plain_s": fixed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=32768)
    parser.add_argument("--small", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--method", choices=METHODS, default="dfa")
    parser.add_argument("--arch", choices=list(CASES), default="resmlp")
    parser.add_argument("--no-memory", action="store_true", help="time only: skip the peak-memory runs")
    parser.add_argument("--in-process", action="store_true", help="both called in this process")
    parser.add_argument("--threads", type=int, default=1, help="with --in-process; 0: torch's default")
    parser.add_argument(
        "--slope", action="store_true", help="also time both at --small: the per-batch ratio and the fixed cost"
    )
    parser.add_argument("--config", type=Path, help="a thresholds YAML for the audit (what a setting costs)")
    args = parser.parse_args()
    py = sys.executable
    results: dict[str, object] = {
        "date": date.today().isoformat(),
        "machine": platform.platform(),
        "cpus": __import__("os").cpu_count(),
        "torch": torch.__version__,
        "device": args.device,
        "method": args.method,
        "arch": args.arch,
        "samples": args.samples,
        "config": None if args.config is None else args.config.read_text(),
    }
    if args.device.startswith("cuda"):
        results["gpu"] = torch.cuda.get_device_name(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ckpt = make_inputs(folder, [args.small, args.samples], args.method, args.arch)
        data = str(folder / f"eval_{args.samples}.safetensors")
        case = CASES[args.arch]
        audit = [py, "-m", "fa_audit", "run", str(ckpt), "--data", data, "--quiet", "--device", args.device,
                 *case.audit_options(args.method)]  # fmt: skip
        if args.config:
            audit += ["--config", str(args.config.resolve())]
        plain = [py, str(HERE / "plain_pass.py"), str(ckpt), data, "--device", args.device, *case.plain_options()]
        if args.in_process:
            if args.threads:
                torch.set_num_threads(args.threads)
            pairs = in_process_pairs(audit[3:], plain[2:], args.repeats)
            ratios = sorted(a / p for p, a in pairs)
            results.update(in_process=True, threads=torch.get_num_threads(), time_ratio_per_pair=ratios,
                           plain_pass_s=statistics.median(p for p, _ in pairs), time_ratio=statistics.median(ratios),
                           audit_s=statistics.median(a for _, a in pairs))  # fmt: skip
            print(json.dumps(results, indent=2))
            return
        audit_s, plain_s, small_s = [], [], []
        small = str(folder / f"eval_{args.small}.safetensors")
        for _ in range(args.repeats):  # alternate, so drift in machine load hits both alike
            if args.slope:
                small_s.append((timed([*plain[:3], small, *plain[4:]]), timed([*audit[:6], small, *audit[7:]])))
            plain_s.append(timed(plain))
            audit_s.append(timed(audit))
        if small_s:
            results.update(_slope(plain_s, audit_s, small_s, args.samples, args.small))
        results["plain_pass_s"] = statistics.median(plain_s)
        results["audit_s"] = statistics.median(audit_s)
        results["time_ratio"] = results["audit_s"] / results["plain_pass_s"]  # type: ignore[operator]
        # Each audit against the plain pass run just before it: the machine's speed drifts by more
        # than the audit's overhead from one minute to the next on a shared host.
        results["time_ratio_per_pair"] = sorted(a / p for a, p in zip(audit_s, plain_s, strict=True))
        memory, cuda_memory = {}, {}
        for n in () if args.no_memory else (args.small, args.samples):
            run_args = [
                "run",
                str(ckpt),
                "--data",
                str(folder / f"eval_{n}.safetensors"),
                "--quiet",
                "--device",
                args.device,
                *case.audit_options(args.method),
            ]
            peaks = [peak_memory_mb(run_args) for _ in range(args.repeats)]
            memory[n] = statistics.median(p[0] for p in peaks)
            cuda_memory[n] = statistics.median(p[1] for p in peaks)
        if memory:
            results["peak_rss_mb"] = memory
            results["memory_ratio"] = memory[args.samples] / memory[args.small]
            plain_peak = statistics.median(peak_memory_mb(plain[2:], plain[1])[0] for _ in range(args.repeats))
            results["plain_pass_peak_rss_mb"] = plain_peak
            results["memory_over_plain"] = memory[args.samples] / plain_peak
        if memory and args.device.startswith("cuda"):
            results["peak_cuda_mb"] = cuda_memory
            results["cuda_memory_ratio"] = cuda_memory[args.samples] / cuda_memory[args.small]
    bare = statistics.median(timed([py, "-c", "pass"]) for _ in range(10))
    results["bare_interpreter_s"] = bare
    results["import_fa_audit_over_bare_s"] = (
        statistics.median(timed([py, "-c", "import fa_audit"]) for _ in range(10)) - bare
    )
    results["help_over_bare_s"] = statistics.median(timed([py, "-m", "fa_audit", "--help"]) for _ in range(10)) - bare
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
