"""Safe file access shared by every loader: one sentence per failure, hashes of inputs."""

from __future__ import annotations

import hashlib
import pickle
import re
import stat
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError
from ..escape import printable

Tensor = torch.Tensor


def check_readable(path: Path) -> None:
    """A regular file that can be read: a FIFO or a device would block or never end."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise InputError("does not exist", path) from None
    except OSError as exc:
        raise InputError(f"cannot be read ({exc.strerror or exc.__class__.__name__})", path) from None
    if stat.S_ISDIR(mode):
        raise InputError("is a directory, not a file", path)
    if not stat.S_ISREG(mode):
        raise InputError("is not a regular file (a FIFO, socket or device cannot be an input)", path)
    try:
        with path.open("rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise InputError(f"cannot be read ({exc.strerror or exc.__class__.__name__})", path) from None
    if path.stat().st_size == 0:
        raise InputError("is empty (0 bytes)", path)


def check_storage(name: str, tensor: Tensor, path: Path, what: str) -> None:
    """A tensor may not claim more elements than its storage holds (an expanded,
    stride-0 view of one number would otherwise become gigabytes on first use)."""
    needed = tensor.numel() * tensor.element_size()
    if needed > tensor.untyped_storage().nbytes():
        raise InputError(
            f"{what} tensor {name!r} of shape {list(tensor.shape)} is an expanded or overlapping view of "
            f"{tensor.untyped_storage().nbytes()} bytes; save it with .contiguous()",
            path,
        )


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_unchanged(digests: dict[Path, str]) -> None:
    """Each file still has the bytes it had when it was first read: the hashes in a
    report are of the bytes that were audited, or there is no report."""
    for path, digest in digests.items():
        if sha256(path) != digest:
            raise InputError("changed while it was being audited; audit it again once it is written", path)


def check_zip_integrity(path: Path) -> None:
    """torch.load does not verify the CRC-32 of a .pt archive's records, so a flipped bit
    in a weight would load silently as a different model; check them here. torch.save
    writes each record once and uncompressed, so duplicate names (torch and zipfile would
    read different ones) and compressed or overlapping records (a zip bomb) are refused
    before anything is inflated."""
    try:
        if not zipfile.is_zipfile(path):
            return  # the legacy format carries no checksum
        with zipfile.ZipFile(path) as archive:
            _check_records(archive.infolist(), path)
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, RuntimeError) as exc:
        # RuntimeError: a record flagged as encrypted; torch never writes one
        raise InputError(
            f"is not a readable PyTorch file, truncated or corrupt ({exc.__class__.__name__})", path
        ) from None
    if bad is not None:
        raise InputError(f"is corrupt: its record {bad!r} fails its CRC-32 check", path)


def _check_records(records: list[zipfile.ZipInfo], path: Path) -> None:
    names = [r.filename for r in records]
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise InputError(f"is a corrupt archive: it holds two records named {printable(twice)!r}", path)
    # torch's reader skips a record marked as a directory (a trailing "/", or the DOS directory
    # bit 0x10 in its attributes) and loads something else in its place
    folder = next((r.filename for r in records if r.filename.endswith("/") or r.external_attr & 0x10), None)
    if folder is not None:
        raise InputError(f"is a corrupt archive: its record {printable(folder)!r} is marked as a directory", path)
    if any(r.compress_type != zipfile.ZIP_STORED for r in records):
        raise InputError("is not a PyTorch file: it holds compressed records, which torch.save never writes", path)
    if sum(r.compress_size for r in records) > path.stat().st_size:
        raise InputError("is a corrupt archive: its records overlap (they claim more bytes than the file has)", path)


def torch_load_safely(path: Path, *, mmap: bool = False) -> Any:
    """torch.load with weights_only=True: a file that needs real unpickling is refused."""
    check_readable(path)
    check_zip_integrity(path)
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols; the error below says it plainly
            warnings.simplefilter("ignore")
            return torch.load(path, weights_only=True, map_location="cpu", mmap=mmap)
    except pickle.UnpicklingError as exc:
        raise _unpickling_error(path, str(exc)) from None
    except RecursionError:
        raise InputError("nests its data too deeply to be a checkpoint", path) from None
    except Exception as exc:  # corrupt zip, truncated stream, legacy format: all "unreadable"
        if mmap:
            return torch_load_safely(path, mmap=False)
        raise InputError(
            f"is not a readable PyTorch file, truncated or corrupt ({exc.__class__.__name__})", path
        ) from None


def _unpickling_error(path: Path, message: str) -> InputError:
    culprit = re.search(r"GLOBAL ([\w.]+)", message)
    if culprit is not None and culprit.group(1).rpartition(".")[2][:1].isupper():
        name = printable(str(path)).replace("'", "")  # as given: the command runs where the audit ran
        saved = printable(str(path.with_name(f"{path.stem}.state_dict.pt"))).replace("'", "")
        return InputError(
            f"holds a pickled {printable(culprit.group(1))} object, which fa-audit refuses to unpickle because a "
            "pickle can run code; if it is a whole model (torch.save(model)), re-save its weights where its class "
            "imports, with the tensors its layers keep as plain attributes (a B set as self.B = ..., which "
            "state_dict() leaves out and the pickle alone holds) under <module>.<attribute>: "
            f"python -c \"import torch; m = torch.load('{name}', weights_only=False); s = m.state_dict(); "
            "s.update({(n + '.' + a).lstrip('.'): v for n, k in m.named_modules() for a, v in vars(k).items() "
            f"if isinstance(v, torch.Tensor)}}); torch.save(s, '{saved}')\"",
            path,
        )
    if culprit is not None:
        return InputError(
            f"needs arbitrary unpickling (it imports {printable(culprit.group(1))}), which fa-audit refuses because "
            "a pickle can run code; re-save it as a dict of tensors, lists and numbers (format 1) or as .safetensors",
            path,
        )
    protocol = _pickle_protocol(path)
    if "Unsupported operand" in message and protocol is not None and protocol > 2:
        return InputError(
            f"was saved with pickle protocol {protocol}, which torch's safe loader cannot read; re-save it "
            "with torch.save's default protocol (drop pickle_protocol=...)",
            path,
        )
    return InputError("is not a readable PyTorch file, truncated or corrupt", path)


def _pickle_protocol(path: Path) -> int | None:
    """The protocol in the PROTO opcode that opens the checkpoint's pickle, if any."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                name = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
                head = archive.open(name).read(2) if name else b""
        else:
            with path.open("rb") as fh:
                head = fh.read(2)
    except (zipfile.BadZipFile, OSError, ValueError, RuntimeError):
        return None
    return head[1] if len(head) == 2 and head[0] == 0x80 else None


def safetensors_error(path: Path, exc: Exception) -> InputError:
    first = str(exc).splitlines()[0][:160] if str(exc) else exc.__class__.__name__
    return InputError(f"is not a valid safetensors file ({first})", path)
