"""How to audit, apart from what: one typed object that each command builds once and every
entry point takes (:func:`fa_audit.audit`, :func:`fa_audit.compare`, ``audit_bundle``,
:func:`fa_audit.audit_module`). An audit option is a field here and, on the command line, a
parameter of the same name in the commands that offer it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import Thresholds, load_thresholds
from .errors import InputError
from .escape import short

if TYPE_CHECKING:
    import torch

    from .checks.baseline import Baseline
    from .report import BaselineInfo

_FLAGS = ("fit_baseline", "use_cache", "distributed")
_PATTERNS = ("rename", "hidden", "deep", "bp_layers")
_TEXT = ("device", "loss", "arch", "method", "state_dict_key", "key_prefix", "feedback_key", "convention",
         "feedback_attr")  # fmt: skip

LOADING = ("feedback", "arch", "arch_config", "method", "state_dict_key", "key_prefix", "feedback_key", "rename",
           "convention", "feedback_attr", "hidden", "batch_dim", "deep", "bp_layers")  # fmt: skip
"""The fields that say how to read a checkpoint file (applied when it is loaded)."""


@dataclass(frozen=True)
class AuditSettings:
    # The eval data and the thresholds.
    data: str | Path | None = None
    """A file, or ``module:pkg.mod:function`` returning (x, y) batches; else the checkpoint's ``meta.data``."""
    config: str | Path | Thresholds | None = None
    """A thresholds YAML merged over the defaults, or thresholds already read."""

    # The depth check's frozen-random-blocks baseline: one of the next three.
    baseline: str | Path | Baseline | BaselineInfo | None = None
    """A frozen-blocks checkpoint (a path, or one loaded), or a baseline measured already."""
    baseline_accuracy: float | None = None
    fit_baseline: bool = False
    train_data: str | Path | None = None
    """For ``fit_baseline``; else the file the checkpoint's ``meta.train_data`` names."""
    cache_dir: Path | None = None
    use_cache: bool = True

    # How to measure.
    device: str | None = None
    batch_size: int = 256
    max_samples: int | None = None
    seed: int = 0
    distributed: bool = True
    """Inside an initialised torch.distributed process group, audit this rank's shard and
    merge the ranks' statistics (every rank must call); False: this process alone."""
    loss: str | None = None
    """The loss head (``cross_entropy``, ``mse``, ``bce``, a plugin's, or ``module:pkg.mod:fn``);
    else the checkpoint's ``meta.loss``, else ``cross_entropy``."""

    # How to read the checkpoint file.
    feedback: str | Path | None = None
    arch: str | None = None
    arch_config: Mapping[str, Any] | None = None
    method: str | None = None
    state_dict_key: str | None = None
    key_prefix: str | None = None
    """The prefix of the network's keys in a state dict that holds more than the network (``model.`` beside an
    EMA copy's ``ema.module.``): the keys outside it are left unused. Else found (docs/conventions.md)."""
    feedback_key: str | None = None
    rename: Sequence[str] = ()
    """``REGEX=REPLACEMENT`` rules for the checkpoint's keys."""
    convention: str | None = None
    """``tinydfa``: read ``feedback`` as TinyDFA's one matrix."""
    feedback_attr: str | None = None
    """The attribute under which your own layers keep their feedback (``B``): each layer holding it
    is read as an FA layer (or, for a DFA method, a hidden module's matrix) and audited through
    its plain twin."""
    hidden: Sequence[str] = ()
    """Module-name patterns (``stages.*``) whose outputs are the hidden states, by forward hooks."""
    batch_dim: int = 0
    """The dimension that holds the samples in the model's input, output and hidden states (1 for
    a sequence-first model, [T, N, ...]); the eval data and every number stay samples first."""
    deep: Sequence[str] = ()
    """Module-name patterns a frozen baseline keeps at initialisation."""
    bp_layers: Sequence[str] = ()
    """Module-name patterns of Linear or Conv layers trained with backprop in an FA-family network
    (a mixed network); by default, in a model built from FA code, its plain torch layers."""

    def __post_init__(self) -> None:
        """A value of the wrong kind is one sentence naming the setting, before any work: a str where
        patterns are meant would be read character by character, a "no" where a bool is meant is true."""
        for name in _FLAGS:
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"the setting {name} must be True or False, not {short(getattr(self, name))}")
        for name in _PATTERNS:
            value = getattr(self, name)
            if isinstance(value, str | bytes) or not all(isinstance(v, str) for v in value):
                raise InputError(
                    f"the setting {name} takes a list of strings ({name}=[...]), not {short(value)}"
                )  # fmt: skip
        for name in _TEXT:
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise InputError(f"the setting {name} must be a string, not {short(value)}")
        if self.feedback_attr is not None and not self.feedback_attr.isidentifier():
            raise InputError(
                f"the setting feedback_attr must be an attribute name (B, fb_weight), not {short(self.feedback_attr)}"
            )
        if self.feedback_attr in ("weight", "bias"):
            raise InputError(
                f"the setting feedback_attr names the layers' own {self.feedback_attr}, which their forward uses: name "
                "the attribute that holds their B"
            )
        if isinstance(self.batch_dim, bool) or not isinstance(self.batch_dim, int) or not 0 <= self.batch_dim <= 3:
            raise InputError(f"the setting batch_dim must be 0, 1, 2 or 3, not {short(self.batch_dim)}")
        accuracy = self.baseline_accuracy
        if accuracy is not None and (isinstance(accuracy, bool) or not isinstance(accuracy, int | float)):
            raise InputError(f"the setting baseline_accuracy must be a number from 0 to 1, not {short(accuracy)}")
        if self.config is not None and not isinstance(self.config, str | Path | Thresholds):
            raise InputError(f"the setting config must be a YAML file's path or a Thresholds, not {short(self.config)}")

    @classmethod
    def of(cls, settings: AuditSettings | None = None, changes: Mapping[str, Any] | None = None) -> AuditSettings:
        """``settings`` (the defaults when None) with ``changes``, whose names must be fields."""
        if settings is not None and not isinstance(settings, AuditSettings):
            raise InputError(
                f"settings must be an AuditSettings (or keyword arguments by its field names), not {short(settings)}"
            )
        changes = dict(changes or {})
        unknown = sorted(set(changes) - {f.name for f in fields(cls)})
        if unknown:
            raise TypeError(f"unknown audit setting{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}")
        return replace(settings or cls(), **changes)

    def thresholds(self) -> Thresholds:
        if isinstance(self.config, Thresholds):
            return self.config
        return load_thresholds(None if self.config is None else Path(self.config))

    def config_file(self) -> Path | None:
        return None if self.config is None or isinstance(self.config, Thresholds) else Path(self.config)

    def torch_device(self) -> torch.device:
        """``device``, checked against what this machine has; the default is CUDA when present."""
        import torch

        name = self.device
        if name is None:
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if name not in {"cpu", "cuda", "mps"} and not name.startswith("cuda:"):
            raise InputError(f"unknown device {short(name)} (use cpu, cuda or mps)")
        if name.startswith("cuda") and not torch.cuda.is_available():
            raise InputError("--device cuda was asked for, but no CUDA device is available")
        if name == "mps" and not torch.backends.mps.is_available():
            raise InputError("--device mps was asked for, but MPS is not available")
        return torch.device(name)

    def loading(self) -> dict[str, Any]:
        """The fields that say how to read a checkpoint, as given."""
        return {name: getattr(self, name) for name in LOADING}
