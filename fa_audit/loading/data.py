"""Eval data (docs/format.md): ``x`` (float, samples first) and ``y`` (integer labels, or the
targets the loss head takes) from .safetensors or .pt (both read lazily, slice by slice) or .npz."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors import safe_open

from ..errors import InputError
from ..escape import printable
from .files import check_readable, check_storage, safetensors_error, torch_load_safely

Tensor = torch.Tensor


class _Sliceable(Protocol):
    def __getitem__(self, index: slice) -> Any: ...


class Targets(Protocol):
    """What a loss head says of its targets (:class:`fa_audit.loss_heads.LossHead`)."""

    @property
    def targets(self) -> str:
        """``labels`` (one integer per sample), ``values`` (floats) or ``any``."""

    def prepare(self, y: Tensor, outputs: int, where: str) -> Tensor: ...


@dataclass(frozen=True)
class EvalData:
    path: Path
    x: _Sliceable
    y: _Sliceable
    samples: int
    sharded: bool = False
    """Each rank of a process group holds its own part (a DistributedSampler's), rather
    than all of it."""

    def batches(
        self, batch_size: int, head: Targets, outputs: int, max_samples: int | None = None, first: int = 0
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """(x float32, y as ``head`` takes them) batches from sample ``first``, checked as they
        stream (``outputs``: the model's output width, the number of classes of labels)."""
        total = self.samples if max_samples is None else min(self.samples, max_samples)
        for start in range(first, total, batch_size):
            stop = min(start + batch_size, total)
            x = _inputs(torch.as_tensor(self.x[start:stop]))
            if x.is_floating_point() and not torch.isfinite(x).all():
                raise InputError(f"x contains NaN or Inf (in samples {start}..{stop - 1})", self.path)
            if not x.is_floating_point() and x.numel() and (int(x.min()) < 0 or int(x.max()) >= outputs):
                bad = int(x.min()) if int(x.min()) < 0 else int(x.max())
                raise InputError(
                    f"x holds token {bad} (in samples {start}..{stop - 1}), outside the model's vocabulary of "
                    f"{outputs}",
                    self.path,
                )
            yield x, head.prepare(torch.as_tensor(self.y[start:stop]), outputs, str(self.path))

    def first(self, n: int = 1) -> Tensor:
        return _inputs(torch.as_tensor(self.x[0:n]))


def _inputs(x: Tensor) -> Tensor:
    """Float32 inputs, or int64 token ids (a language model's x)."""
    return x.float() if x.is_floating_point() else x.long()


def load_eval_data(path: str | Path, layout: str = "labels") -> EvalData:
    """The eval data file, its y checked for the loss head's ``layout`` (:class:`Targets`)."""
    path = Path(path)
    check_readable(path)
    if path.suffix == ".safetensors":
        x, y, shapes = _open_safetensors(path)
    elif path.suffix in {".pt", ".pth"}:
        loaded = torch_load_safely(path, mmap=True)
        if not isinstance(loaded, dict):
            raise InputError(f"holds a {type(loaded).__name__}, not a dict with 'x' and 'y'", path)
        _require(loaded, path)
        x, y = loaded["x"], loaded["y"]
        if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)):
            raise InputError("'x' and 'y' must be tensors", path)
        check_storage("x", x, path, "eval data")
        check_storage("y", y, path, "eval data")
        shapes = (tuple(x.shape), tuple(y.shape), x.dtype, y.dtype)
    elif path.suffix == ".npz":
        x, y, shapes = _open_npz(path)
    else:
        raise InputError("has an unknown extension: expected .safetensors, .pt or .npz", path)
    x_shape, y_shape, x_dtype, y_dtype = shapes
    _check_layout(path, x_shape, y_shape, str(x_dtype), str(y_dtype), layout)
    return EvalData(path=path, x=x, y=y, samples=x_shape[0])


def _require(keys: Any, path: Path) -> None:
    missing = [k for k in ("x", "y") if k not in keys]
    if missing:
        raise InputError(f"has no {' and no '.join(repr(k) for k in missing)} (eval data needs 'x' and 'y')", path)


def _open_safetensors(path: Path) -> tuple[Any, Any, tuple[Any, ...]]:
    try:
        fh = safe_open(str(path), framework="pt")
        _require(set(fh.keys()), path)  # type: ignore[no-untyped-call]
        x, y = fh.get_slice("x"), fh.get_slice("y")  # type: ignore[no-untyped-call]
        return x, y, (tuple(x.get_shape()), tuple(y.get_shape()), x.get_dtype(), y.get_dtype())
    except InputError:
        raise
    except Exception as exc:
        raise safetensors_error(path, exc) from None


def _open_npz(path: Path) -> tuple[Any, Any, tuple[Any, ...]]:
    import numpy as np

    _check_npz_size(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            _require(npz.files, path)
            x, y = npz["x"], npz["y"]
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"is not a readable .npz file ({exc.__class__.__name__})", path) from None
    return x, y, (tuple(x.shape), tuple(y.shape), x.dtype, y.dtype)


NPZ_MAX_RATIO = 64
"""An .npz member may inflate to at most this many times the file's size (or 256 MB)."""


def _check_npz_size(path: Path) -> None:
    """np.load inflates a member whole: refuse a small file that claims gigabytes."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            inflated = sum(r.file_size for r in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise InputError(f"is not a readable .npz file ({exc.__class__.__name__})", path) from None
    if inflated > max(NPZ_MAX_RATIO * path.stat().st_size, 256 << 20):
        raise InputError(f"inflates to {inflated} bytes, out of proportion to its {path.stat().st_size}", path)


def _check_layout(
    path: Path, x_shape: tuple[int, ...], y_shape: tuple[int, ...], x_dtype: str, y_dtype: str, layout: str
) -> None:
    tokens = layout == "tokens" and any(k in x_dtype.lower() for k in ("int", "i16", "i32", "i64", "u8"))
    if not tokens and not any(k in x_dtype.lower() for k in ("float", "f16", "f32", "f64", "bf16")):
        raise InputError(
            f"x has dtype {x_dtype}; inputs must be floating point (or token ids, with a token loss)", path
        )
    floating = "float" in y_dtype.lower() or y_dtype.upper().startswith(("F", "BF"))
    if "complex" in y_dtype.lower() or y_dtype.upper().startswith("C"):
        raise InputError(f"y has dtype {y_dtype}; targets must be real numbers", path)
    if layout == "labels" and (floating or "bool" in y_dtype.lower()):
        raise InputError(f"y has dtype {y_dtype}; labels must be integers (int64) (float targets: choose --loss)", path)
    if layout == "tokens" and (floating or len(y_shape) != 2):
        raise InputError(f"y has dtype {y_dtype} and shape {list(y_shape)}; token targets are int64 [N, T]", path)
    if tokens and tuple(x_shape) != tuple(y_shape):
        raise InputError(f"x has shape {list(x_shape)} but y {list(y_shape)}: one target per input token", path)
    if layout == "labels" and len(y_shape) != 1:
        raise InputError(f"y has shape {list(y_shape)}; labels must be one integer per sample", path)
    if layout == "values" and not (floating or "bool" in y_dtype.lower() or len(y_shape) == 1):
        raise InputError(
            f"y has dtype {y_dtype}; the loss head needs float targets (or one integer label a sample)", path
        )
    if len(x_shape) < 2 or not y_shape or x_shape[0] != y_shape[0]:
        what = "labels" if layout == "labels" else "targets"
        raise InputError(f"x has shape {list(x_shape)} but y has {y_shape[0] if y_shape else 0} {what}", path)
    if x_shape[0] == 0:
        raise InputError("holds zero samples", path)


GATHER_BYTES = 512 << 20
"""The most eval data gathered in memory from batches (a DataLoader, a generator, --data
module:) without max_samples: an endless source stops here, with one sentence."""


def eval_data_from_batches(
    batches: Iterable[Any], source: Path, max_samples: int | None = None, layout: str = "labels"
) -> EvalData:
    """Eval data from an iterable of ``(x, y)`` batches (a DataLoader, a list), gathered in
    memory (the first ``max_samples`` samples, at most GATHER_BYTES), each batch checked as
    a file's arrays are: floating x with samples first and one sample shape, integer labels."""
    xs: list[Tensor] = []
    ys: list[Tensor] = []
    kept = size = 0
    iterator = _iterate(batches, source)
    for index, batch in iterator:
        x, y = _pair(batch, index, source, layout)
        if xs and x.shape[1:] != xs[0].shape[1:]:
            raise InputError(
                f"yields batch {index} with per-sample shape {list(x.shape[1:])} where the first had "
                f"{list(xs[0].shape[1:])}",
                source,
            )
        if len(y) == 0:
            continue
        xs.append(x)
        ys.append(y)
        kept, size = kept + len(y), size + x.numel() * x.element_size()
        if max_samples is not None and kept >= max_samples:
            break
        if size > GATHER_BYTES:
            raise InputError(
                f"yields more than {GATHER_BYTES >> 20} MiB of samples ({kept} so far) without ending; pass "
                "--max-samples (max_samples=) to audit a part of it",
                source,
            )
    if not xs:
        raise InputError("yields no samples", source)
    x, y = torch.cat(xs)[:max_samples], torch.cat(ys)[:max_samples]  # gathered by whole batches
    return EvalData(path=source, x=x, y=y, samples=len(y))


def _iterate(batches: Iterable[Any], source: Path) -> Iterator[tuple[int, Any]]:
    """The batches, numbered; an exception of the user's iterator is one sentence."""
    try:
        iterator = iter(batches)
    except TypeError:
        raise InputError(f"is a {type(batches).__name__}, not an iterable of (x, y) batches", source) from None
    index = 0
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except Exception as exc:
            detail = printable(str(exc).splitlines()[0][:160]) if str(exc) else ""
            raise InputError(f"raised {type(exc).__name__} at batch {index}: {detail}".rstrip(": "), source) from None
        yield index, batch
        index += 1


def _pair(batch: Any, index: int, source: Path, layout: str) -> tuple[Tensor, Tensor]:
    if not (isinstance(batch, tuple | list) and len(batch) >= 2):
        raise InputError(f"yields {type(batch).__name__} at batch {index}, not an (x, y) pair", source)
    try:  # tensors, or arrays (numpy) that become tensors
        x, y = (torch.as_tensor(t).detach().cpu() for t in batch[:2])
    except (TypeError, ValueError, RuntimeError):
        kinds = ", ".join(type(t).__name__ for t in batch[:2])
        raise InputError(f"yields ({kinds}) at batch {index}; x and y must be tensors or arrays", source) from None
    if x.layout != torch.strided or y.layout != torch.strided:
        raise InputError(
            f"yields a {x.layout if x.layout != torch.strided else y.layout} tensor at batch {index}; x and y must be "
            "dense tensors (call .to_dense())",
            source,
        )
    tokens = layout == "tokens" and not x.is_floating_point() and not x.is_complex() and x.dtype != torch.bool
    if not x.is_floating_point() and not tokens:
        raise InputError(f"yields x of dtype {x.dtype} at batch {index}; inputs must be floating point", source)
    labels = layout == "labels"
    if y.is_complex() or (labels and (y.is_floating_point() or y.dtype == torch.bool or y.dim() != 1)):
        raise InputError(
            f"yields y of dtype {y.dtype} and shape {list(y.shape)} at batch {index}; "
            + ("labels must be one integer class per sample" if labels else "targets must be real numbers"),
            source,
        )
    if tokens and x.shape != y.shape:
        raise InputError(f"yields x of shape {list(x.shape)} but y {list(y.shape)} at batch {index}", source)
    if x.dim() < 2 or y.dim() < 1 or len(x) != len(y):
        raise InputError(f"yields x of shape {list(x.shape)} with {len(y)} labels at batch {index}", source)
    return x, y
