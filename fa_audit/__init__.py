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
    from .audit_log import AuditLog
    from .comparison import Comparison
    from .config import Thresholds
    from .conventions import register_plain
    from .live import audit_module
    from .report import AuditReport
    from .save import save_bundle
    from .settings import AuditSettings
    from .trajectories import Trajectory, load_reports, trajectory

_LAZY = {
    "AuditLog": "audit_log",
    "register_plain": "conventions",
    "audit": "api",
    "audit_bundle": "api",
    "audit_module": "live",
    "compare": "api",
    "AuditReport": "report",
    "save_bundle": "save",
    "AuditSettings": "settings",
    "Comparison": "comparison",
    "Thresholds": "config",
    "trajectory": "trajectories",
    "Trajectory": "trajectories",
    "load_reports": "trajectories",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'fa_audit' has no attribute {name!r}")


__all__ = [
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
