"""A parametrized test's processes started ahead of it, two at a time.

Each hostile-input case is one `fa-audit` process, most of whose time is `import torch` on one
core: run one by one, the two hostile corpora were two fifths of the suite on CI's two cores.
:class:`Ahead` prepares the cases the session selected, in the order they run (in the main
thread: the builders save checkpoints), and runs their processes in a pool of two; each test
then waits for its own and makes its own assertions on it, in its own folder.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Generic, TypeVar

import pytest

WORKERS = 2
Prepared = TypeVar("Prepared")
Result = TypeVar("Result")


class Ahead(Generic[Prepared, Result]):
    """Each selected case of one test: what ``prepare`` made of it, and ``run``'s result on that."""

    def __init__(self) -> None:
        self.cases: dict[str, tuple[Prepared, Future[Result]] | BaseException] = {}

    def get(self, name: str) -> tuple[Prepared, Result]:
        """The case's preparation and its process's result (a preparation's error is raised here, in its own test)."""
        case = self.cases[name]
        if isinstance(case, BaseException):
            raise case
        prepared, result = case
        return prepared, result.result()


def ahead_of(test: str, prepare: Callable[[str, Path], Prepared], run: Callable[[Prepared], Result]) -> Any:
    """A module fixture: the cases of the module's ``test`` (parametrized by ``name``) that this
    session runs, each prepared in a folder of its own and run in the pool; the pool is joined
    when the module's tests are done."""

    @pytest.fixture(scope="module")
    def cases(
        request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[Ahead[Prepared, Result]]:
        names = [
            str(item.callspec.params["name"])
            for item in request.session.items
            if isinstance(item, pytest.Function) and item.module is request.module and item.originalname == test
        ]
        started: Ahead[Prepared, Result] = Ahead()
        with ThreadPoolExecutor(WORKERS) as pool:
            for name in names:
                try:
                    prepared = prepare(name, tmp_path_factory.mktemp("case"))
                except Exception as exc:  # raised in the case's own test, not in every test of the module
                    started.cases[name] = exc
                    continue
                started.cases[name] = (prepared, pool.submit(run, prepared))
            yield started

    return cases
