"""fa-audit: is the number you are about to report for a Feedback-Alignment-trained
network meaningful? Scale stability, reference validity and depth utility, per layer.

``import fa_audit`` stays light: torch is imported only when an audit runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import InputError
from .exit_codes import ExitCode

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .api import audit, audit_bundle, compare
    from .config import Thresholds
    from .conventions import register_plain
    from .live import audit_module
    from .live.accumulator import AuditAccumulator
    from .live.audit_log import AuditLog
    from .loading.save import save_bundle
    from .report import AuditReport
    from .report.comparison import Comparison
    from .report.trajectories import Trajectory, load_reports, trajectory
    from .settings import AuditSettings

_LAZY = {
    "AuditAccumulator": "live.accumulator",
    "AuditLog": "live.audit_log",
    "register_plain": "conventions",
    "audit": "api",
    "audit_bundle": "api",
    "audit_module": "live",
    "compare": "api",
    "AuditReport": "report",
    "save_bundle": "loading.save",
    "AuditSettings": "settings",
    "Comparison": "report.comparison",
    "Thresholds": "config",
    "trajectory": "report.trajectories",
    "Trajectory": "report.trajectories",
    "load_reports": "report.trajectories",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'fa_audit' has no attribute {name!r}")


__all__ = [
    "AuditAccumulator",
    "AuditLog",
    "AuditReport",
    "AuditSettings",
    "Comparison",
    "ExitCode",
    "InputError",
    "Thresholds",
    "Trajectory",
    "__version__",
    "audit",
    "audit_bundle",
    "audit_module",
    "compare",
    "load_reports",
    "register_plain",
    "save_bundle",
    "trajectory",
]
