"""The process an audit runs in: the torch version it needs, its thread count, the
process group it joins under torchrun, and the console it prints to."""

from __future__ import annotations

import atexit
import gc
import os
import shutil
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar, cast

from ..errors import InputError
from ..escape import short

if TYPE_CHECKING:
    from rich.console import Console

T = TypeVar("T")

MIN_TORCH = (2, 10)
MAX_THREADS = 1024
MIN_WIDTH = 80  # columns the tables are laid out for, however narrow the terminal


def require_safe_torch() -> None:
    import torch

    version = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2] if p.isdigit())
    if version < MIN_TORCH:
        raise InputError(
            f"torch {torch.__version__} is too old: releases before 2.10 have known escapes from the "
            "safe (weights_only) checkpoint loader; upgrade torch to 2.10 or newer"
        )


def load_torch() -> None:
    """torch and the audit's modules imported with Python's cyclic garbage collector paused, and
    frozen after: they live as long as the process, yet torch's ~180,000 objects were scanned by
    three full collections during the import and one more at exit, and many younger ones (0.5-0.7 s
    of a 2.6-3.2 s ``fa-audit run`` of a bundled sample). The program's own choice: the library
    leaves the collector of a process it runs in alone."""
    if "torch" in sys.modules:
        return
    enabled = gc.isenabled()
    gc.disable()
    try:
        import torch  # noqa: F401

        from .. import api  # noqa: F401
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def set_threads(threads: int | None) -> None:
    if threads is None:
        return
    if not 1 <= threads <= MAX_THREADS:
        raise InputError(f"--threads must be from 1 to {MAX_THREADS}, not {short(threads)}")
    import torch

    torch.set_num_threads(threads)


def launched_rank() -> tuple[int, int]:
    """(rank, world size) as torchrun sets them in the environment; (0, 1) without it."""
    try:
        world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    except ValueError:
        raise InputError("WORLD_SIZE and RANK must be integers (torchrun sets them)") from None
    if world < 1 or not 0 <= rank < world:
        raise InputError(f"RANK {rank} is not a rank of WORLD_SIZE {world} (torchrun sets them)")
    return rank, world


def is_lead_rank() -> bool:
    """Whether this process writes outputs and messages: rank 0, or a process alone."""
    try:
        return launched_rank()[0] == 0
    except InputError:
        return True


def join_process_group() -> None:
    """Under torchrun, join its process group once. gloo: the ranks exchange only their
    running sums, pickled on the CPU, whatever device the audit runs on."""
    rank, world = launched_rank()
    if world == 1:
        return
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    if torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))  # --device cuda: this rank's own GPU
    dist.init_process_group("gloo", rank=rank, world_size=world)
    atexit.register(dist.destroy_process_group)


def on_every_rank(prepare: Callable[[], T]) -> T:
    """``prepare()`` after joining torchrun's process group: an error it raises on any rank
    (a file missing on one node, a baseline it cannot read) is raised on every rank, the
    lowest rank's, so that each ends alike and none waits for a rank that has stopped."""
    join_process_group()
    if launched_rank()[1] == 1:
        return prepare()
    from ..measure.ranks import Ranks, raise_first

    try:
        result, error = prepare(), None
    except Exception as exc:
        result, error = None, exc
    raise_first(Ranks.current().gather(error))
    return cast(T, result)


def _columns() -> int:
    """COLUMNS when it names a width of at least MIN_WIDTH, else 120."""
    given = os.environ.get("COLUMNS", "")
    return max(int(given), MIN_WIDTH) if given.isdigit() else 120


def make_console(no_color: bool) -> Console:
    from rich.console import Console

    from ..output_file import silence_stdout

    class _Console(Console):
        def on_broken_pipe(self) -> None:  # rich's own exits with 1, which means "a check failed"
            silence_stdout()

    # Off a terminal (CI logs, files) rich would assume 80 columns and cut the table: 120, unless
    # COLUMNS says otherwise (a tmux pane, a log viewer). On a terminal narrower than 80, rich
    # shrinks ten columns to nothing and prints blank cells: lay out for 80 and let it wrap.
    width = max(shutil.get_terminal_size().columns, MIN_WIDTH) if sys.stdout.isatty() else _columns()
    return _Console(no_color=no_color or "NO_COLOR" in os.environ, highlight=False, width=width)
