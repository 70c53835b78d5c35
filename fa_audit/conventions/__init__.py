"""Feedback conventions of real FA code, recognised by the entries they leave in a state
dict. A new library is one new module here and one line in :data:`CONVENTIONS`."""

from __future__ import annotations

from .base import Convention, Layout, Mapped
from .biotorch import BioTorch
from .drtp import DRTP
from .simple import DKP, SIGN_SYMMETRY, WEIGHT_FA
from .tinydfa import HOW_TO_SAVE, TinyDFA, split_matrix
from .twin import Twin, plain_twin, register_plain, twin_note

CONVENTIONS: tuple[Convention, ...] = (BioTorch(), DRTP(), SIGN_SYMMETRY, WEIGHT_FA, DKP(), TinyDFA())


def recognise(keys: list[str]) -> Convention | None:
    """The convention whose entries the state dict holds (at most one may)."""
    found = [c for c in CONVENTIONS if any(c.claims(k) for k in keys)]
    return found[0] if found else None


__all__ = [
    "CONVENTIONS",
    "HOW_TO_SAVE",
    "Convention",
    "Layout",
    "Mapped",
    "Twin",
    "plain_twin",
    "recognise",
    "register_plain",
    "split_matrix",
    "twin_note",
]
