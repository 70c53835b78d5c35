"""Output formats: each a module behind :class:`FileFormat` (what it renders from a
:class:`Result`, whether ``-`` may mean standard output). A new format is one module here
and one line in :data:`FORMATS`; the command line gives it an option in each command's
signature, and routing, checks and atomic writing follow from the registry."""

from __future__ import annotations

from .base import FileFormat, Kind, Result
from .json_format import JSON
from .junit_format import JUNIT
from .latex_format import LATEX
from .markdown_format import MARKDOWN
from .plot_format import PLOT
from .sarif_format import SARIF

FORMATS: dict[str, FileFormat] = {f.name: f for f in (JSON, MARKDOWN, LATEX, PLOT, SARIF, JUNIT)}

__all__ = ["FORMATS", "FileFormat", "Kind", "Result"]
