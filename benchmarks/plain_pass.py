"""The physical floor an audit is measured against: one forward and one backward pass
(gradients at every hidden state) over the eval data, streamed in batches.

    python benchmarks/plain_pass.py CKPT DATA [--device cpu] [--batch-size 256] [--hidden NAME ...]
                                    [--arch ARCH --arch-config JSON]

--hidden: the hidden states are those modules' outputs, captured by forward hooks (a user's module);
--arch ARCH --arch-config JSON: a checkpoint that is a state dict alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from torch.nn import functional as F

from model_adapters import get_adapter
from model_adapters.hooks import hidden_by_hooks


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint")
    parser.add_argument("data")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--hidden", action="append", default=[])
    parser.add_argument("--arch", help="for a checkpoint that is a state dict alone (as BioTorch's users save)")
    parser.add_argument("--arch-config", default="{}")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/resnet.py, biotorch_lenet.py
    saved = torch.load(args.checkpoint, weights_only=True, map_location="cpu")
    if args.arch:
        arch, config, state = args.arch, json.loads(args.arch_config), saved
    else:
        arch, config, state = saved["arch"], saved["arch_config"], saved["state_dict"]
    model = get_adapter(arch).build(config)
    model.module.load_state_dict(state)
    model.module.to(args.device).eval()  # as the audit runs it (BatchNorm on its running statistics)
    with safe_open(args.data, framework="pt") as fh:
        xs, ys = fh.get_slice("x"), fh.get_slice("y")
        n = xs.get_shape()[0]
        for start in range(0, n, args.batch_size):
            x = xs[start : start + args.batch_size]
            x = (x.float() if x.is_floating_point() else x.long()).to(args.device)  # token ids stay integers
            y = ys[start : start + args.batch_size].long().to(args.device)
            if args.hidden:
                logits, hidden = hidden_by_hooks(model.module, tuple(args.hidden), x)
            else:
                logits, hidden = model.forward_hidden(x)
            per_token = logits.dim() == 3  # a language model: the mean token loss of each sequence
            loss = (
                # flattened, as language-model code computes it ([N, V, T] through transpose is 1.8x slower)
                F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(y.shape).mean(1).sum()
                if per_token
                else F.cross_entropy(logits, y, reduction="sum")
            )
            torch.autograd.grad(loss, hidden)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()


if __name__ == "__main__":
    main()
