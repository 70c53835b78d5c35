"""The source distribution can run its own tests: it ships every test file, helper and data
file, the samples they audit and the docs they read, with the licences (tests/third_party
holds TinyDFA's MIT code)."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ("tests", "docs", "sample_checkpoints", "fa_audit", "model_adapters", "examples", "benchmarks")


def _tracked() -> list[str]:
    try:
        listed = subprocess.run(
            ["git", "ls-files", *SHIPPED], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the files the sdist must hold are not known")
    return [p for p in listed if (ROOT / p).is_file()]


def test_the_sdist_holds_every_tracked_test_sample_and_doc(tmp_path: Path) -> None:
    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip("the build needs setuptools >= 77 (PEP 639 licence metadata)")
    build = (
        f"import sys; from setuptools import build_meta; sys.stdout.write(build_meta.build_sdist({str(tmp_path)!r}))"
    )
    name = subprocess.run(
        [sys.executable, "-c", build], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()[-1]
    with tarfile.open(tmp_path / name) as sdist:
        top = name.removesuffix(".tar.gz")
        inside = {member.removeprefix(f"{top}/") for member in sdist.getnames()}
        info = sdist.extractfile(f"{top}/PKG-INFO")
        assert info is not None
        metadata = info.read().decode()
    missing = sorted(set(_tracked()) - inside)
    assert not missing, missing[:10]
    assert {"LICENSE", "README.md", "pyproject.toml", "tests/third_party/LICENSE-tinydfa"} <= inside
    assert "License-Expression: MIT" in metadata
    description = metadata.split("\n\n", 1)[1]  # the long description follows the headers
    assert "three checks" in description and "](" not in description  # no link a package page cannot follow
