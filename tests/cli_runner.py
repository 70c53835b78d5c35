"""Running the CLI in-process for the report tests."""

from __future__ import annotations

from typer.testing import CliRunner

from fa_audit.cli import app

runner = CliRunner()


def run(*args: object, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, [str(a) for a in args], env=env)
    return result.exit_code, result.stdout, result.stderr
