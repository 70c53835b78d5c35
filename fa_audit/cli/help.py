"""Click's conventional help for arguments: ``CHECKPOINT...`` in the usage line and in
the Arguments section, not typer's ``{checkpoints}...`` and ``<list[Path]>``.

Parameters are told apart by ``param_type_name``: typer vendors click in recent
releases and depends on it in older ones, so neither module is imported here."""

from __future__ import annotations

from typing import Any

from typer.core import TyperCommand


def _is_argument(param: Any) -> bool:
    return bool(param.param_type_name == "argument")


def _name(argument: Any) -> str:
    return str(argument.metavar or (argument.name or "").upper())


class PlainHelpCommand(TyperCommand):
    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            pieces += [_name(param)] if _is_argument(param) else param.get_usage_pieces(ctx)
        return pieces

    def format_options(self, ctx: Any, formatter: Any) -> None:
        params = self.get_params(ctx)
        arguments = [
            (_name(p), getattr(p, "help", None) or "")
            for p in params
            if _is_argument(p) and not getattr(p, "hidden", False)
        ]
        options = [record for p in params if not _is_argument(p) if (record := p.get_help_record(ctx)) is not None]
        for title, rows in (("Arguments", arguments), ("Options", options)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)
