"""Options shared by the commands, declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import InputError
from .outputs import Format

Data = Annotated[
    Path | None,
    typer.Option(help="eval data (.safetensors, .pt, .npz, or module:pkg.mod:function giving (x, y) batches)"),
]
Config = Annotated[Path | None, typer.Option(help="thresholds YAML, merged over the defaults")]
Baseline = Annotated[
    Path | None, typer.Option(help="frozen-random-blocks baseline checkpoint (method 'frozen') for depth utility")
]
BaselineAccuracy = Annotated[
    float | None,
    typer.Option(help="accuracy (0..1) of a frozen-blocks baseline measured elsewhere, instead of --baseline"),
]
Arch = Annotated[str | None, typer.Option(help="architecture, for bare state dicts")]
ArchConfig = Annotated[str | None, typer.Option(help="arch config: inline JSON or a YAML/JSON file")]
Loss = Annotated[
    str | None,
    typer.Option(
        help="loss head: cross_entropy (default), mse, bce, or module:pkg.mod:fn returning one loss per sample "
        "(else the checkpoint's meta.loss)"
    ),
]
Method = Annotated[
    str | None, typer.Option(help="training method, when the checkpoint and its feedback convention do not say")
]
StateDictKey = Annotated[
    str | None, typer.Option(help="the entry holding the state dict, when a checkpoint holds several")
]
KeyPrefix = Annotated[
    str | None,
    typer.Option(
        metavar="PREFIX",
        help="the prefix of the network's state-dict keys when the state dict holds more (model. beside an EMA "
        "copy's ema.module.); the other keys are left unused",
    ),
]
FeedbackKey = Annotated[
    str | None, typer.Option(help="the entry holding the feedback (a list or dict of tensors) beside the state dict")
]
Renames = Annotated[
    list[str] | None,
    typer.Option(
        "--rename",
        metavar="REGEX=REPLACEMENT",
        help="rename state-dict and feedback keys (re.sub; repeatable, in order)",
    ),
]
Convention = Annotated[
    str | None, typer.Option(help="tinydfa: --feedback holds TinyDFA's one matrix (other conventions are recognised)")
]
Device = Annotated[str | None, typer.Option(help="cpu, cuda or mps (default: cuda when available)")]
BatchSize = Annotated[int, typer.Option(help="eval batch size (1 to 1048576)")]
MaxSamples = Annotated[int | None, typer.Option(help="audit at most this many eval samples")]
Seed = Annotated[int, typer.Option(help="seed of the null-calibration draws (0 to 2**63 - 1)")]
Threads = Annotated[int | None, typer.Option(help="CPU threads for torch, 1 to 1024 (default: torch's choice)")]
Json = Annotated[str | None, typer.Option("--json", metavar="FILE", help="write the JSON here ('-' = stdout)")]
Markdown = Annotated[
    str | None, typer.Option(metavar="FILE", help="write a Markdown report a paper can paste ('-' = stdout)")
]
OutputFormat = Annotated[
    Format, typer.Option("--format", help="table, or github: workflow annotations and a step summary")
]
Latex = Annotated[
    str | None,
    typer.Option(
        metavar="FILE", help="write booktabs tables with the verdict in the caption, for a paper ('-' = stdout)"
    ),
]
Sarif = Annotated[
    str | None, typer.Option(metavar="FILE", help="write a SARIF 2.1.0 log for code scanning ('-' = stdout)")
]
Junit = Annotated[
    str | None, typer.Option(metavar="FILE", help="write JUnit XML, a test case per check ('-' = stdout)")
]
Plot = Annotated[str | None, typer.Option(metavar="FILE", help="write a PNG of the profile (needs the 'plot' extra)")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="print nothing; the exit code tells")]
NoColor = Annotated[bool, typer.Option("--no-color", help="plain output (NO_COLOR is honoured too)")]
Debug = Annotated[bool, typer.Option(help="show tracebacks")]
Hidden = Annotated[
    list[str] | None,
    typer.Option(
        metavar="PATTERN",
        help="modules whose outputs are the hidden states, by hooks ('stages.*'; repeatable or comma-separated)",
    ),
]
FeedbackAttr = Annotated[
    str | None,
    typer.Option(
        "--feedback-attr",
        metavar="NAME",
        help="the attribute your own FA layers keep their feedback under (B): those layers are read as FA layers "
        "(a DFA method: hidden modules' matrices) and audited through plain twins",
    ),
]
BatchDim = Annotated[
    int,
    typer.Option(
        "--batch-dim",
        metavar="DIM",
        help="the dimension that holds the samples in the model's input, output and hidden states "
        "(1 for a sequence-first [T, N, ...] model); the eval data stays samples first",
    ),
]
Deep = Annotated[
    list[str] | None,
    typer.Option(
        metavar="PATTERN", help="modules a frozen-blocks baseline keeps at init (default: hidden after the first)"
    ),
]
Staged = Annotated[
    bool,
    typer.Option(
        "--staged",
        help="audit the checkpoints (.pt, .pth, .ckpt) git has staged, the --baseline left out: for pre-commit hooks, "
        "where file names must never be read as options",
    ),
]
RequireKey = Annotated[
    bool,
    typer.Option(
        "--require-key",
        help="refuse any report unless FA_AUDIT_REPORT_KEY is set and its HMAC verifies (for CI gates)",
    ),
]
BpLayers = Annotated[
    list[str] | None,
    typer.Option(
        "--bp-layers",
        metavar="PATTERN",
        help="Linear/Conv layers trained with backprop in an FA-family net (default: a model's plain torch layers "
        "beside layers of FA code)",
    ),
]
Wide = Annotated[
    bool, typer.Option("--wide", help="also show the diagnostics table (perturbation, effective rank, W∠B)")
]
FitBaseline = Annotated[
    bool, typer.Option("--fit-baseline", help="fit the frozen-blocks baseline here (needs train data; cached)")
]
TrainData = Annotated[Path | None, typer.Option(help="train data for --fit-baseline; default: meta.train_data")]
CacheDir = Annotated[Path | None, typer.Option(help="where fitted baselines are cached (default: ~/.cache/fa-audit)")]
NoCache = Annotated[
    bool, typer.Option("--no-cache", help="fit the baseline again, neither reading nor writing the cache")
]


def parse_arch_config(value: str | None) -> dict[str, Any] | None:
    """``--arch-config``: inline JSON, or a YAML/JSON file."""
    if value is None:
        return None
    from ..text_input import CONFIG_BYTES, parse_json, parse_yaml, read_text

    if value.lstrip().startswith("{"):
        parsed = parse_json(value[: CONFIG_BYTES + 1], None)
    else:
        path = Path(value)
        parsed = parse_yaml(read_text(path, "an --arch-config file", CONFIG_BYTES), path)
    if not isinstance(parsed, dict) or not all(isinstance(k, str) for k in parsed):
        raise InputError("--arch-config must be a mapping with text keys")
    return parsed
