"""The command line: a thin shell over the library (:func:`fa_audit.audit`,
:func:`fa_audit.compare`, :func:`fa_audit.trajectory`). It parses options, hands the
result to the outputs and maps every outcome to an :class:`ExitCode`. torch is
imported only inside commands, so ``fa-audit --help`` stays instant."""

from __future__ import annotations

import sys
from contextlib import redirect_stdout
from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .. import __version__
from ..errors import InputError
from ..escape import printable
from ..exit_codes import ExitCode
from . import options as o
from .guard import guarded
from .help import PlainHelpCommand
from .outputs import Format, Outputs, emit, progress
from .runtime import load_torch, make_console, on_every_rank, require_safe_torch, set_threads

if TYPE_CHECKING:
    from ..report import AuditReport
    from ..settings import AuditSettings

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help: rich's help formatter costs 80 ms of imports
    help="Audit Feedback-Alignment checkpoints before you report a number.",
)


def _settings(flags: dict[str, Any]) -> AuditSettings:
    """The command's parameters named as :class:`AuditSettings` fields, as settings; a
    baseline checkpoint is loaded once for all the audits of the command."""
    from .. import api
    from ..settings import AuditSettings

    given = {f.name: flags[f.name] for f in fields(AuditSettings) if f.name in flags}
    baseline, given["baseline"] = given["baseline"], None
    given["arch_config"] = o.parse_arch_config(given["arch_config"])
    for repeatable in ("rename", "hidden", "deep", "bp_layers"):
        given[repeatable] = tuple(given[repeatable] or ())
    settings = AuditSettings(**given, use_cache=not flags["no_cache"])
    return settings if baseline is None else replace(settings, baseline=api.load_baseline(baseline, settings))


def _named_inputs(checkpoints: list[Path], *files: str | Path | None) -> list[Path]:
    """The input files the command line names, with each checkpoint's sidecar: no
    output may overwrite one (the files an audit finds itself, such as meta.data, are
    checked again before anything is written)."""
    from ..loading import sidecar_path

    named = [*checkpoints, *(sidecar_path(p) for p in checkpoints)]
    named += [Path(f) for f in files if f is not None and not str(f).lstrip().startswith("{")]
    return [p for p in named if p.exists()]


def _read_by(reports: list[AuditReport]) -> list[Path]:
    return [Path(path) for report in reports for path in report.inputs]


def _prepare(out: Outputs, threads: int | None, inputs: list[Path]) -> None:
    """Everything that can be refused before the first audit starts (run by
    :func:`on_every_rank`, so that a refusal on one rank ends them all)."""
    out.check(inputs)
    require_safe_torch()
    set_threads(threads)


def _run_inputs(flags: dict[str, Any], out: Outputs) -> tuple[list[Path], AuditSettings | None]:
    """The checkpoints ``run`` audits and its settings (none: git has no checkpoint staged)."""
    checkpoints, feedback = flags["checkpoints"], flags["feedback"]
    if flags["staged"] and checkpoints:
        raise InputError("--staged audits the checkpoints git has staged; name no checkpoint with it")
    if not flags["staged"] and not checkpoints:
        raise InputError("name a checkpoint to audit (or --staged, in a git hook)")
    load_torch()
    from ..loading.discover import expand_checkpoints, staged_checkpoints

    if flags["staged"]:
        paths = staged_checkpoints(flags["baseline"])
        if not paths:
            return [], None
    else:
        paths = expand_checkpoints(checkpoints)
    named = ("data", "config", "arch_config", "baseline", "train_data")
    _prepare(out, flags["threads"], _named_inputs(paths, feedback, *(flags[k] for k in named)))
    if len(paths) > 1 and feedback is not None:
        raise InputError("--feedback names one checkpoint's feedback; give one checkpoint with it")
    return paths, _settings(flags)


@app.command(cls=PlainHelpCommand)
def run(
    checkpoints: Annotated[
        list[Path] | None,
        typer.Argument(
            metavar="CHECKPOINT...",
            show_default=False,
            help="checkpoints (.pt, .safetensors, ...), directories or globs; or AuditLog .jsonl files",
        ),
    ] = None,
    data: o.Data = None,
    feedback: Annotated[
        Path | None,
        typer.Option(help="feedback weights file (default: the bundle's own, or <stem>.feedback.safetensors)"),
    ] = None,
    config: o.Config = None,
    baseline: o.Baseline = None,
    baseline_accuracy: o.BaselineAccuracy = None,
    fit_baseline: o.FitBaseline = False,
    train_data: o.TrainData = None,
    cache_dir: o.CacheDir = None,
    no_cache: o.NoCache = False,
    json_out: o.Json = None,
    markdown: o.Markdown = None,
    latex: o.Latex = None,
    fmt: o.OutputFormat = Format.TABLE,
    plot: o.Plot = None,
    sarif: o.Sarif = None,
    junit: o.Junit = None,
    arch: o.Arch = None,
    arch_config: o.ArchConfig = None,
    method: o.Method = None,
    loss: o.Loss = None,
    state_dict_key: o.StateDictKey = None,
    key_prefix: o.KeyPrefix = None,
    feedback_key: o.FeedbackKey = None,
    rename: o.Renames = None,
    convention: o.Convention = None,
    feedback_attr: o.FeedbackAttr = None,
    hidden: o.Hidden = None,
    batch_dim: o.BatchDim = 0,
    deep: o.Deep = None,
    bp_layers: o.BpLayers = None,
    device: o.Device = None,
    batch_size: o.BatchSize = 256,
    max_samples: o.MaxSamples = None,
    seed: o.Seed = 0,
    threads: o.Threads = None,
    quiet: o.Quiet = False,
    no_color: o.NoColor = False,
    wide: o.Wide = False,
    staged: o.Staged = False,
    debug: o.Debug = False,
) -> None:
    """Audit checkpoints: per-layer table, three checks, verdict; several make a trajectory. Exit 0/1/2/3/4."""
    flags = dict(locals())

    def body() -> ExitCode:
        out = Outputs.of(
            fmt, quiet, no_color, json=json_out, markdown=markdown, latex=latex, plot=plot, sarif=sarif, junit=junit
        )
        if checkpoints and not staged and all(str(c).endswith(".jsonl") for c in checkpoints):
            return _summarized(checkpoints, out, config)  # an AuditLog of a training run
        paths, settings = on_every_rank(lambda: _run_inputs(flags, out))
        if settings is None:
            if not quiet:
                sys.stderr.write("fa-audit: no staged checkpoint to audit\n")
            return ExitCode.TRUST
        from .. import api
        from .views import report_result, trajectory_result

        with progress(out.progress) as on_progress, redirect_stdout(sys.stderr):  # a user model's prints
            reports = [api.audit(p, settings, on_progress=on_progress) for p in paths]
        if len(reports) == 1:
            emit(report_result(reports[0], wide), out, _read_by(reports))
            return reports[0].exit_code
        result, traj = trajectory_result([r.to_dict() for r in reports])
        emit(result, out, _read_by(reports))
        return traj.exit_code

    guarded(body, debug)


@app.command(cls=PlainHelpCommand)
def compare(
    a: Annotated[Path, typer.Argument(metavar="A", help="checkpoint A (the reference)")],
    b: Annotated[Path, typer.Argument(metavar="B", help="checkpoint B (the change)")],
    data: o.Data = None,
    config: o.Config = None,
    baseline: o.Baseline = None,
    baseline_accuracy: o.BaselineAccuracy = None,
    fit_baseline: o.FitBaseline = False,
    train_data: o.TrainData = None,
    cache_dir: o.CacheDir = None,
    no_cache: o.NoCache = False,
    json_out: o.Json = None,
    markdown: o.Markdown = None,
    latex: o.Latex = None,
    fmt: o.OutputFormat = Format.TABLE,
    plot: o.Plot = None,
    sarif: o.Sarif = None,
    junit: o.Junit = None,
    arch: o.Arch = None,
    arch_config: o.ArchConfig = None,
    method: o.Method = None,
    loss: o.Loss = None,
    state_dict_key: o.StateDictKey = None,
    key_prefix: o.KeyPrefix = None,
    feedback_key: o.FeedbackKey = None,
    rename: o.Renames = None,
    convention: o.Convention = None,
    feedback_attr: o.FeedbackAttr = None,
    hidden: o.Hidden = None,
    batch_dim: o.BatchDim = 0,
    deep: o.Deep = None,
    bp_layers: o.BpLayers = None,
    device: o.Device = None,
    batch_size: o.BatchSize = 256,
    max_samples: o.MaxSamples = None,
    seed: o.Seed = 0,
    threads: o.Threads = None,
    quiet: o.Quiet = False,
    no_color: o.NoColor = False,
    debug: o.Debug = False,
) -> None:
    """Audit A and B on the same eval data, side by side; exit 1 when a check that passes for A fails for B."""
    flags = dict(locals())

    def body() -> ExitCode:
        out = Outputs.of(
            fmt, quiet, no_color, json=json_out, markdown=markdown, latex=latex, plot=plot, sarif=sarif, junit=junit
        )

        def prepared() -> AuditSettings:
            load_torch()
            _prepare(out, threads, _named_inputs([a, b], data, config, arch_config, baseline, train_data))
            return _settings(flags)

        settings = on_every_rank(prepared)
        from .. import api
        from .views import comparison_result

        with progress(out.progress) as on_progress, redirect_stdout(sys.stderr):
            comparison = api.compare(a, b, settings, on_progress=on_progress)
        emit(comparison_result(comparison), out, _read_by([comparison.a, comparison.b]))
        return comparison.exit_code

    guarded(body, debug)


@app.command(cls=PlainHelpCommand)
def summarize(
    reports: Annotated[
        list[Path],
        typer.Argument(metavar="REPORT...", help="JSON reports written by --json (one report or a list each)"),
    ],
    config: o.Config = None,
    json_out: o.Json = None,
    markdown: o.Markdown = None,
    latex: o.Latex = None,
    fmt: o.OutputFormat = Format.TABLE,
    plot: o.Plot = None,
    sarif: o.Sarif = None,
    junit: o.Junit = None,
    require_key: o.RequireKey = False,
    quiet: o.Quiet = False,
    no_color: o.NoColor = False,
    debug: o.Debug = False,
) -> None:
    """Merge JSON reports audited elsewhere (array jobs, other machines) into one trajectory table,
    each judged again by --config's thresholds (the defaults without it), never by its own."""

    def body() -> ExitCode:
        return _summarized(
            reports,
            Outputs.of(
                fmt, quiet, no_color, json=json_out, markdown=markdown, latex=latex, plot=plot, sarif=sarif, junit=junit
            ),
            config,
            require_key,
        )

    guarded(body, debug)


def _summarized(reports: list[Path], out: Outputs, config: Path | None, require_key: bool = False) -> ExitCode:
    """Reports written elsewhere (``--json`` files, AuditLog lines) as one trajectory, judged
    by ``config``'s thresholds."""
    out.check([*reports, *([config] if config else [])])
    from ..config import load_thresholds
    from ..report.trajectories import load_reports
    from .views import trajectory_result

    by = "the default thresholds" if config is None else f"the thresholds of {printable(str(config))}"
    result, traj = trajectory_result(load_reports(reports, load_thresholds(config), by, require_key))
    emit(result, out, reports)
    return traj.exit_code


@app.command()
def adapters(debug: o.Debug = False) -> None:
    """List the registered model adapters, credit-assignment methods and feedback conventions."""

    def body() -> ExitCode:
        from rich.table import Table
        from rich.text import Text

        from model_adapters import list_adapters
        from model_adapters.registry import source_of

        from ..conventions import CONVENTIONS
        from ..methods import list_methods

        table = Table("adapter", "from", "description", title="model adapters", title_justify="left")
        for name, adapter in list_adapters().items():  # Text: "[classes, in]" is not rich markup
            table.add_row(Text(name), Text(source_of(name)), Text(adapter.description))
        table.add_row(
            "module:pkg.mod:Class", "your code", "your own nn.Module: --hidden names its hidden modules (or .blocks)"
        )
        methods = Table("method", "feedback", "description", title="methods", title_justify="left")
        for name, m in list_methods().items():
            methods.add_row(Text(name), "required" if m.needs_feedback else "none", Text(m.description))
        conventions = Table("convention", "recognised by", title="feedback conventions", title_justify="left")
        for convention in CONVENTIONS:
            conventions.add_row(Text(convention.name), Text(convention.description))
        conventions.add_row("attribute:NAME", "your own layers keeping B as the attribute NAME (--feedback-attr NAME)")
        console = make_console(False)
        for shown in (table, methods, conventions):
            console.print(shown)
        return ExitCode.TRUST

    guarded(body, debug)


@app.command("config")
def show_config(
    config: Annotated[Path | None, typer.Option(help="thresholds YAML to merge over the defaults")] = None,
    debug: o.Debug = False,
) -> None:
    """Print the effective thresholds as YAML."""

    def body() -> ExitCode:
        from ..config import load_thresholds

        sys.stdout.write(load_thresholds(config).to_yaml())
        return ExitCode.TRUST

    guarded(body, debug)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"fa-audit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="show the version")
    ] = False,
) -> None:
    """Audit Feedback-Alignment checkpoints before you report a number."""
