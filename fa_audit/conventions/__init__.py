"""Feedback conventions of real FA code, recognised by the entries they leave in a state
dict. A new library is one new module here and one line in :data:`CONVENTIONS`."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ..escape import printable
from .base import Convention, Layout, Mapped
from .biotorch import BioTorch
from .drtp import DRTP
from .simple import ATTRIBUTE, DKP, SIGN_SYMMETRY, WEIGHT_FA, NamedAttribute
from .tinydfa import HOW_TO_SAVE, TinyDFA, split_matrix
from .twin import Twin, plain_beside, plain_twin, register_plain, twin_note

CONVENTIONS: tuple[Convention, ...] = (BioTorch(), DRTP(), SIGN_SYMMETRY, WEIGHT_FA, DKP(), TinyDFA())


def recognise(keys: list[str], path: Path | None = None) -> Convention | None:
    """The convention whose entries the state dict holds; entries of two are an input error
    (which library's feedback to audit cannot be told)."""
    found = {c.name: (c, next(k for k in keys if c.claims(k))) for c in CONVENTIONS if any(c.claims(k) for k in keys)}
    if len(found) > 1:
        named = ", ".join(f"{name} ({printable(key)!r})" for name, (_, key) in found.items())
        raise InputError(f"holds feedback entries of more than one library's convention: {named}", path)
    return next(iter(found.values()))[0] if found else None


def by_name(name: str) -> Convention:
    if name.startswith(ATTRIBUTE):
        return NamedAttribute(name.removeprefix(ATTRIBUTE))
    return next(c for c in CONVENTIONS if c.name == name)


def attribute_convention(attribute: str | None) -> tuple[Convention, ...]:
    """The convention of ``--feedback-attr`` (a user's layers keeping B as ``attribute``), if named:
    the one that applies then, before any library's."""
    return () if attribute is None else (NamedAttribute(attribute),)


__all__ = [
    "CONVENTIONS",
    "HOW_TO_SAVE",
    "Convention",
    "Layout",
    "Mapped",
    "Twin",
    "attribute_convention",
    "by_name",
    "plain_beside",
    "plain_twin",
    "recognise",
    "register_plain",
    "split_matrix",
    "twin_note",
]
