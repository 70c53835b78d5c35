"""Every example of output in README.md and docs/ is what the command prints on the
samples today (tests/doc_examples.py; ``python -m tests.doc_examples`` rewrites them)."""

from __future__ import annotations

import pytest

from .doc_examples import examples, mismatch, output

CASES = [(doc.name, args, block) for doc, args, block in examples()]


def test_the_docs_hold_examples() -> None:
    assert {"README.md", "cli.md", "samples.md"} <= {doc for doc, _, _ in CASES}


@pytest.mark.parametrize(("doc", "args", "block"), CASES, ids=[f"{d}: {a}" for d, a, _ in CASES])
def test_an_example_is_what_the_command_prints(doc: str, args: str, block: str) -> None:
    departs = mismatch(block, output(args))
    assert departs is None, f"{doc}: the example of `{args}` departs from the output at: {departs}"
