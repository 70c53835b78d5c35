"""The one exception that means "the user's input is wrong" (exit 2)."""

from __future__ import annotations

from pathlib import Path


class InputError(Exception):
    """Bad input: a file that cannot be read or does not fit, a bad option or YAML.

    ``str(err)`` is one sentence that names the file (when there is one) and the problem.
    """

    def __init__(self, problem: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path is not None else problem)
