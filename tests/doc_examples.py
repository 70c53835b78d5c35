"""The examples of output in README.md and docs/: each code block (or Markdown table) after
a marker ``<!-- example: fa-audit ARGS -->`` is what ``fa-audit ARGS`` prints on the samples,
run from the repository root at 120 columns without colour; after ``<!-- example: python
SCRIPT -->``, what that script prints. ``test_doc_examples.py`` holds
them to it (numbers within 2 %, line wrapping and table borders aside; a line ``...``
stands for output left out); ``python -m tests.doc_examples`` rewrites every block from a
fresh run."""

from __future__ import annotations

import contextlib
import glob
import io
import os
import re
import runpy
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKER = re.compile(r"<!-- example: (.+?) -->\n(```\n.*?```|(?:\|[^\n]*\n)+)", re.S)
FENCE = "```\n"
ENV = {"COLUMNS": "120", "NO_COLOR": "1", "TERM": "dumb"}
BOX = str.maketrans({c: " " for c in "┏━┳┓┃┡╇┩│└┴┘├┼┤┌┬┐─╭╮╰╯"})
NUMBER = re.compile(r"([-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?)")
GAP = "\0"


def _body(block: str) -> str:
    return block.removeprefix(FENCE).removesuffix("```") if block.startswith(FENCE) else block


def examples() -> Iterator[tuple[Path, str, str]]:
    """(document, the command, the block as written) for every marked example."""
    for doc in DOCS:
        for match in MARKER.finditer(doc.read_text(encoding="utf-8")):
            yield doc, match.group(1), _body(match.group(2))


def output(command: str) -> str:
    """What ``command`` (``fa-audit ARGS`` or ``python SCRIPT``) prints, from the repository root."""
    from typer.testing import CliRunner

    from fa_audit.cli import app

    program, _, args = command.partition(" ")
    here = Path.cwd()
    os.chdir(ROOT)
    try:
        if program == "python":
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                runpy.run_path(args, run_name="__main__")
            return printed.getvalue()
        # a quoted glob is expanded as a shell would
        words = [w for word in args.split() for w in (sorted(glob.glob(word)) if "*" in word else [word])]
        return CliRunner().invoke(app, words, env=ENV).stdout
    finally:
        os.chdir(here)


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


def _rewritten(match: re.Match[str]) -> str:
    """The block from a fresh run; one that ends in ``...`` keeps only as many lines as it had."""
    lines = [line.rstrip() for line in output(match.group(1)).splitlines()]
    written = _body(match.group(2)).splitlines()
    if written and written[-1].strip() == "...":
        lines = [*lines[: len(written) - 1], "..."]
    fresh = "".join(f"{line}\n" for line in lines)
    block = f"{FENCE}{fresh}```" if match.group(2).startswith(FENCE) else fresh
    return f"<!-- example: {match.group(1)} -->\n{block}"


def main() -> None:
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        fresh = MARKER.sub(_rewritten, text)
        if fresh != text:
            doc.write_text(fresh, encoding="utf-8")
            print(f"rewrote {doc.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
