"""The examples of output in README.md and docs/: each code block after a marker
``<!-- example: fa-audit ARGS -->`` is what ``fa-audit ARGS`` prints on the samples, run
from the repository root at 120 columns without colour. ``test_doc_examples.py`` holds
them to it (numbers within 2 %, line wrapping and table borders aside; a line ``...``
stands for output left out); ``python -m tests.doc_examples`` rewrites every block from a
fresh run."""

from __future__ import annotations

import glob
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKER = re.compile(r"<!-- example: fa-audit (.+?) -->\n```\n(.*?)```", re.S)
ENV = {"COLUMNS": "120", "NO_COLOR": "1", "TERM": "dumb"}
BOX = str.maketrans({c: " " for c in "┏━┳┓┃┡╇┩│└┴┘├┼┤┌┬┐─╭╮╰╯"})
NUMBER = re.compile(r"([-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?)")
GAP = "\0"


def examples() -> Iterator[tuple[Path, str, str]]:
    """(document, the arguments, the block as written) for every marked example."""
    for doc in DOCS:
        for match in MARKER.finditer(doc.read_text(encoding="utf-8")):
            yield doc, match.group(1), match.group(2)


def output(args: str) -> str:
    """What ``fa-audit args`` prints, from the repository root."""
    from typer.testing import CliRunner

    from fa_audit.cli import app

    here = Path.cwd()
    os.chdir(ROOT)
    try:  # a quoted glob is expanded as a shell would
        words = [w for word in args.split() for w in (sorted(glob.glob(word)) if "*" in word else [word])]
        result = CliRunner().invoke(app, words, env=ENV)
    finally:
        os.chdir(here)
    return result.stdout


def atoms(text: str) -> list[str]:
    """Words split into text and number atoms, table borders and wrapping ignored."""
    out: list[str] = []
    for line in text.splitlines():
        if line.strip() == "...":
            out.append(GAP)
            continue
        for word in line.translate(BOX).split():
            out += [a for a in NUMBER.split(word) if a]
    return out


def _same(a: str, b: str) -> bool:
    if NUMBER.fullmatch(a) and NUMBER.fullmatch(b):
        x, y = float(a), float(b)
        return abs(x - y) <= max(2e-2 * max(abs(x), abs(y)), 1.5e-3)
    return a == b


def mismatch(written: str, printed: str) -> str | None:
    """Where ``written`` departs from ``printed`` (its segments between gaps, in order), or None."""
    have, want = atoms(printed), atoms(written)
    segments, current = [[]], 0
    for atom in want:
        if atom == GAP:
            segments.append([])
        else:
            segments[-1].append(atom)
    for segment in filter(None, segments):
        found = next(
            (i for i in range(current, len(have) - len(segment) + 1)
             if all(_same(a, b) for a, b in zip(segment, have[i : i + len(segment)], strict=True))),
            None,
        )  # fmt: skip
        if found is None:
            return " ".join(segment[:40])
        current = found + len(segment)
    return None


def main() -> None:
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        fresh = MARKER.sub(lambda m: f"<!-- example: fa-audit {m.group(1)} -->\n```\n{output(m.group(1))}```", text)
        if fresh != text:
            doc.write_text(fresh, encoding="utf-8")
            print(f"rewrote {doc.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
