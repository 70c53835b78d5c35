"""The repository stands on its own: no link in README.md or docs/ leaves it."""

from __future__ import annotations

import re

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
