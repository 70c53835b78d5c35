"""Every Python and shell block in README.md and docs/ runs as shown, from a folder holding the
files the docs name (run.pt, frozen.pt, a.pt, b.pt, eval.safetensors, thresholds.yaml: copies
of the samples); a block that cannot (it installs, needs a cluster, or is a skeleton of the
user's own code) says why in a ``<!-- not run: REASON -->`` line above it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import SAMPLES

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"(?:<!-- not run: (?P<why>[^\n]+?) -->\n)?```(?P<lang>python|bash)\n(?P<body>.*?)```", re.S)
FILES = {"run.pt": "dfa.pt", "a.pt": "dfa.pt", "b.pt": "dfa_penalty.pt", "frozen.pt": "frozen.pt",
         "eval.safetensors": "eval.safetensors"}  # fmt: skip


def _blocks() -> list[tuple[str, str, str, str | None]]:
    found = []
    for doc in DOCS:
        for match in BLOCK.finditer(doc.read_text(encoding="utf-8")):
            found.append((doc.relative_to(ROOT).as_posix(), match["lang"], match["body"], match["why"]))
    return found


RUN = [(doc, lang, body) for doc, lang, body, why in _blocks() if why is None]


def test_every_block_runs_or_says_why_not() -> None:
    blocks = _blocks()
    assert len(blocks) >= 15 and len(RUN) >= 3  # the count guards the pattern, which a fence change could break
    assert all(why is None or len(why) > 10 for *_, why in blocks)


@pytest.mark.parametrize(("doc", "lang", "body"), RUN, ids=[f"{d}:{i}" for i, (d, _, _) in enumerate(RUN)])
def test_the_block_runs_as_shown(doc: str, lang: str, body: str, tmp_path: Path) -> None:
    if "lightning" in body:
        pytest.importorskip("lightning")
    for name, sample in FILES.items():
        shutil.copy(SAMPLES / sample, tmp_path / name)
    (tmp_path / "thresholds.yaml").write_text("scale_stability: {max_block_growth: 50}\n")
    command = [sys.executable, "-c", body] if lang == "python" else ["bash", "-e", "-c", body]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{doc}: {done.stderr[-2000:]}"
