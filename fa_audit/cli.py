"""The command line: a thin shell over :func:`fa_audit.audit`. It parses options,
renders the report and maps every outcome to an :class:`ExitCode`. torch is imported
only inside commands, so ``fa-audit --help`` stays instant."""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from . import __version__
from .errors import InputError
from .exit_codes import ExitCode

if TYPE_CHECKING:
    from rich.console import Console

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help: rich's help formatter costs 80 ms of imports
    help="Audit Feedback-Alignment checkpoints before you report a number.",
)

MIN_TORCH = (2, 10)


def _fail(code: ExitCode, message: str) -> NoReturn:
    typer.echo(f"fa-audit: {message}", err=True)
    raise typer.Exit(int(code))


def guarded(body: Callable[[], ExitCode], debug: bool) -> NoReturn:
    """Run a command body; every exception becomes an exit code, never a traceback
    (unless --debug) and never exit 1, which means "a check failed"."""
    try:
        code = body()
    except typer.Exit:
        raise
    except InputError as exc:
        if debug:
            traceback.print_exc()
        _fail(ExitCode.INPUT_ERROR, f"error: {exc}")
    except KeyboardInterrupt:
        _fail(ExitCode.INTERRUPTED, "interrupted")
    except Exception as exc:
        if debug:
            traceback.print_exc()
        _fail(
            ExitCode.INTERNAL_ERROR,
            f"internal error ({exc.__class__.__name__}: {str(exc)[:200]}). This is a bug in fa-audit: please "
            "report it with the command you ran; --debug shows the traceback",
        )
    raise typer.Exit(int(code))


def require_safe_torch() -> None:
    import torch

    version = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2] if p.isdigit())
    if version < MIN_TORCH:
        raise InputError(
            f"torch {torch.__version__} is too old: releases before 2.10 have known escapes from the "
            "safe (weights_only) checkpoint loader; upgrade torch to 2.10 or newer"
        )


def set_threads(threads: int | None) -> None:
    if threads is None:
        return
    if threads < 1:
        raise InputError(f"--threads must be at least 1, not {threads}")
    import torch

    torch.set_num_threads(threads)


def parse_arch_config(value: str | None) -> dict[str, Any] | None:
    """Inline JSON, or a YAML/JSON file."""
    if value is None:
        return None
    import yaml

    if value.lstrip().startswith("{"):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as exc:
            raise InputError(f"--arch-config is not valid JSON ({exc.msg})") from None
    else:
        path = Path(value)
        try:
            parsed = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read --arch-config ({exc.__class__.__name__})", path) from None
        except yaml.YAMLError:
            raise InputError("--arch-config file is not valid YAML or JSON", path) from None
    if not isinstance(parsed, dict):
        raise InputError("--arch-config must be a mapping of keys to values")
    return parsed


def make_console(no_color: bool) -> Console:
    from rich.console import Console

    # Off a terminal (CI logs, files) rich would assume 80 columns and cut the table.
    width = None if sys.stdout.isatty() else 120
    return Console(no_color=no_color or "NO_COLOR" in os.environ, highlight=False, width=width)


@app.command()
def run(
    checkpoint: Annotated[Path, typer.Argument(help="checkpoint bundle (.pt, .pth or .safetensors)")],
    data: Annotated[Path | None, typer.Option(help="eval data (.safetensors, .pt, .npz); default: meta.data")] = None,
    feedback: Annotated[
        Path | None,
        typer.Option(
            help="feedback weights file (default: the bundle's own, or <stem>.feedback.safetensors beside it)"
        ),
    ] = None,
    config: Annotated[Path | None, typer.Option(help="thresholds YAML, merged over the defaults")] = None,
    baseline: Annotated[Path | None, typer.Option(help="trained frozen-blocks baseline for depth utility")] = None,
    json_out: Annotated[str | None, typer.Option("--json", help="write the JSON report here ('-' = stdout)")] = None,
    arch: Annotated[str | None, typer.Option(help="architecture, for bare state dicts")] = None,
    arch_config: Annotated[str | None, typer.Option(help="arch config: inline JSON or a YAML/JSON file")] = None,
    method: Annotated[str | None, typer.Option(help="training method, for bare state dicts")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda or mps (default: cuda when available)")] = None,
    batch_size: Annotated[int, typer.Option(help="eval batch size")] = 256,
    max_samples: Annotated[int | None, typer.Option(help="audit at most this many eval samples")] = None,
    seed: Annotated[int, typer.Option(help="seed of the null-calibration draws")] = 0,
    threads: Annotated[int | None, typer.Option(help="CPU threads for torch (default: torch's choice)")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="print nothing; the exit code tells")] = False,
    no_color: Annotated[bool, typer.Option("--no-color", help="plain output (NO_COLOR is honoured too)")] = False,
    debug: Annotated[bool, typer.Option(help="show tracebacks")] = False,
) -> None:
    """Audit one checkpoint: per-layer table, three checks, verdict; exit 0/1/2/3/4."""

    def body() -> ExitCode:
        require_safe_torch()
        set_threads(threads)
        from .api import audit
        from .render.json_report import dumps, write_atomically
        from .render.table import render

        console = make_console(no_color)
        show_progress = sys.stdout.isatty() and not quiet and json_out != "-"
        with _progress(show_progress) as on_progress:
            report = audit(
                checkpoint,
                data=data,
                feedback=feedback,
                config=config,
                baseline=baseline,
                arch=arch,
                arch_config=parse_arch_config(arch_config),
                method=method,
                device=device,
                batch_size=batch_size,
                max_samples=max_samples,
                seed=seed,
                on_progress=on_progress,
            )
        if json_out == "-":
            sys.stdout.write(dumps(report))
        elif json_out is not None:
            write_atomically(Path(json_out), dumps(report))
        if not quiet and json_out != "-":
            render(report, console)
        return report.exit_code

    guarded(body, debug)


class _progress:
    """A rich progress bar on a terminal; a no-op elsewhere."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __enter__(self) -> Callable[[int, int], None] | None:
        if not self.enabled:
            return None
        from rich.progress import Progress

        self.bar = Progress(transient=True)
        self.task = self.bar.add_task("auditing", total=None)
        self.bar.start()
        return lambda done, total: self.bar.update(self.task, completed=done, total=total)

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.bar.stop()


@app.command()
def adapters(debug: Annotated[bool, typer.Option(help="show tracebacks")] = False) -> None:
    """List the registered model adapters and credit-assignment methods."""

    def body() -> ExitCode:
        from rich.table import Table

        from model_adapters import list_adapters

        from .methods import list_methods

        table = Table("adapter", "description", title="model adapters", title_justify="left")
        for name, adapter in list_adapters().items():
            table.add_row(name, adapter.description)
        table.add_row("module:pkg.mod:Class", "your own nn.Module with model(x, return_hidden=True) and model.blocks")
        methods = Table("method", "feedback", "description", title="methods", title_justify="left")
        for name, m in list_methods().items():
            methods.add_row(name, "required" if m.needs_feedback else "none", m.description)
        console = make_console(False)
        console.print(table)
        console.print(methods)
        return ExitCode.TRUST

    guarded(body, debug)


@app.command("config")
def show_config(
    config: Annotated[Path | None, typer.Option(help="thresholds YAML to merge over the defaults")] = None,
    debug: Annotated[bool, typer.Option(help="show tracebacks")] = False,
) -> None:
    """Print the effective thresholds as YAML."""

    def body() -> ExitCode:
        from .config import load_thresholds

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


def main() -> None:
    app()
