"""BioTorch's LeNet for CIFAR, built by BioTorch's own code (``pip install --no-deps
biotorch==0.0.16``): its ``models/le_net.py`` loaded by path (the ``biotorch.models``
package imports torchvision), converted by its ``BioModule`` as its ``le_net_cifar`` does.
Its state dict is what BioTorch's users save (``module.conv1.weight``,
``module.conv1.weight_backward``, …); audited as ``--arch module:biotorch_lenet:BioLeNet
--arch-config '{"kind": "fa"}' --method fa``, its hidden states the four ReLUs."""

from __future__ import annotations

import importlib.util
import os
from contextlib import redirect_stdout
from typing import Any

from torch import nn

HIDDEN = ["module.relu1", "module.relu2", "module.relu3", "module.relu4"]


def BioLeNet(kind: str = "fa") -> nn.Module:
    import biotorch
    from biotorch.module.biomodule import BioModule

    path = os.path.join(os.path.dirname(biotorch.__file__), "models", "le_net.py")
    spec = importlib.util.spec_from_file_location("biotorch_le_net", path)
    assert spec is not None and spec.loader is not None
    le_net: Any = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(le_net)
    with open(os.devnull, "w") as sink, redirect_stdout(sink):  # BioModule prints its conversion
        model: nn.Module = BioModule(le_net.le_net_cifar(), mode=kind, copy_weights=False, output_dim=10)
    return model
