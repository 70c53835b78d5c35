"""Load: checkpoints, feedback and eval data from disk, validated."""

from .checkpoint import Bundle, Overrides, checkpoint_dtype, load_bundle, sidecar_path
from .data import EvalData, load_eval_data
from .files import sha256, verify_unchanged

__all__ = [
    "Bundle",
    "EvalData",
    "Overrides",
    "checkpoint_dtype",
    "load_bundle",
    "load_eval_data",
    "sha256",
    "sidecar_path",
    "verify_unchanged",
]
