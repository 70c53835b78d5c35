"""The repository stands on its own: no link in README.md or docs/ leaves it; the lists of
methods and conventions in the docs are the registries'."""

from __future__ import annotations

import re

from fa_audit.conventions import CONVENTIONS
from fa_audit.methods import list_methods

from .conftest import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_no_document_points_outside_the_repository() -> None:
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        assert "../shared" not in text, doc
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
            if not target.startswith(("http://", "https://")):
                assert (doc.parent / target).resolve().is_relative_to(ROOT), (doc, target)
                assert (doc.parent / target).exists(), (doc, target)


def test_the_docs_define_every_adapter_module_and_measurement() -> None:
    adapters = (ROOT / "docs" / "adapters.md").read_text(encoding="utf-8")
    assert all(name in adapters for name in ("`embed`", "`blocks.{i}`", "`norm`", "`head`", "`layers.{i}`"))
    measurements = (ROOT / "docs" / "measurements.md").read_text(encoding="utf-8")
    for key in ("h_norm", "growth", "g_norm", "null_mean", "dir_stab", "fp64_agree_min", "saturated_fraction"):
        assert f"`{key}" in measurements, key


def _first_column(text: str, header: str) -> set[str]:
    """The backticked names in the first column of the table whose header row is ``header``."""
    rows = text.split(header, 1)[1].split("\n\n", 1)[0].splitlines()[2:]
    return {name for row in rows for name in re.findall(r"`([a-z_0-9]+)`", row.split("|")[1])}


def test_the_method_tables_are_the_registry() -> None:
    builtin = {n for n, m in list_methods().items() if type(m).__module__.startswith("fa_audit.")}
    measurements = (ROOT / "docs" / "measurements.md").read_text(encoding="utf-8")
    assert _first_column(measurements, "| method | feedback | c_l |") == builtin
    conventions = (ROOT / "docs" / "conventions.md").read_text(encoding="utf-8")
    assert _first_column(conventions, "| method | credit at h_l |") == builtin - {"bp", "frozen"}


def test_the_convention_list_is_the_registry() -> None:
    text = (ROOT / "docs" / "conventions.md").read_text(encoding="utf-8")
    listed = text.split("By name (", 1)[1].split("\n\n", 1)[0].split("):", 1)[1]
    assert re.findall(r"`([a-z_]+)`", listed) == [c.name for c in CONVENTIONS]
