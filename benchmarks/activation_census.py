"""Census of what one real MergeDNA training step keeps for its backward pass: the bytes of every
distinct storage autograd saves, attributed to a pass (MTR, latent MTR, AMTM), a module and a
part (Transformer blocks or the rest), as megamerge/memory_estimate/activations.py models them.

    python benchmarks/activation_census.py --seq-length 2048 --micro-batch 4 [--checkpoint-activations]

How it counts. `torch.autograd.graph.saved_tensors_hooks` sees every tensor an op saves; views
share their storage, so each storage is counted once, at its first saver, and parameters are not
counted (they are model state). Under activation checkpointing the checkpoint's own hooks take
precedence inside a block (PyTorch applies the innermost hooks only) and the block keeps its
inputs instead, so each checkpointed block's inputs are counted by a forward pre-hook.

Passes follow `MergeDNA.compute_losses`' order: pass 1 starts with the first Local Encoder call,
pass 2 with the second Latent Encoder call, pass 3 with the second Local Encoder call.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path
from typing import Self

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from megamerge.models import MergeDNA, MergeDNAConfig
from megamerge.models.common.block import TransformerBlock
from megamerge.training.activation_checkpointing import apply_activation_checkpointing

MODULE_NAMES = ("local_encoder", "latent_encoder", "latent_decoder", "local_decoder")


class SavedTensorCensus:
    """Context manager around one forward pass of `model` (a MergeDNA); `.bytes` maps
    (pass, module, part) to saved bytes once it exits."""

    def __init__(self, model: MergeDNA, checkpointed: bool):
        self.model, self.checkpointed = model, checkpointed
        self.bytes: dict[tuple[str, str, str], int] = defaultdict(int)
        self._seen: set[int] = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self._scope = [("outside", "other")]
        self._pass = "MTR"
        self._calls = defaultdict(int)
        self._handles = []

    # ------------------------------------------------------------------ attribution
    def _count(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        if storage.data_ptr() in self._seen:
            return
        self._seen.add(storage.data_ptr())
        module, part = self._scope[-1]
        self.bytes[(self._pass, module, part)] += storage.nbytes()

    def _enter(self, module: str, part: str):
        def pre(mod, args):
            self._scope.append((module, part))
            if part == "blocks" and self.checkpointed:  # the checkpoint keeps the block's inputs alive
                for a in torch.utils._pytree.tree_leaves(args):
                    if isinstance(a, torch.Tensor):
                        self._count(a)

        def post(mod, args, out):
            self._scope.pop()

        return pre, post

    def _pass_marker(self, module: str):
        def pre(mod, args):
            self._calls[module] += 1
            if module == "local_encoder":
                self._pass = "MTR" if self._calls[module] == 1 else "AMTM"
            elif module == "latent_encoder" and self._calls[module] == 2:
                self._pass = "latent MTR"

        return pre

    # ------------------------------------------------------------------ context manager
    def __enter__(self) -> Self:
        for name in MODULE_NAMES:
            part = getattr(self.model, name)
            self._handles.append(part.register_forward_pre_hook(self._pass_marker(name)))
            for module in [part, *(m for m in part.modules() if isinstance(m, TransformerBlock))]:
                pre, post = self._enter(name, "blocks" if module is not part else "other")
                self._handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        self._count(t)
        return t

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)
        for h in self._handles:
            h.remove()


def census(cfg: MergeDNAConfig, micro: int, seq: int, checkpointed: bool, seed: int = 0) -> dict:
    """Saved bytes of one training-mode forward of the three passes, by (pass, module, part)."""
    torch.manual_seed(seed)
    model = MergeDNA(cfg).train()
    if checkpointed:
        apply_activation_checkpointing(model)
    ids = torch.randint(0, 4, (micro, seq))
    with SavedTensorCensus(model, checkpointed) as c:
        out = model.compute_losses(ids)
    del out
    return dict(c.bytes)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny")
    p.add_argument("--micro-batch", type=int, default=4)
    p.add_argument("--seq-length", type=int, default=2048)
    p.add_argument("--checkpoint-activations", action="store_true")
    a = p.parse_args(argv)
    cfg = MergeDNAConfig.from_preset(a.model)
    counts = census(cfg, a.micro_batch, a.seq_length, a.checkpoint_activations)
    for key in sorted(counts):
        print(f"  {' / '.join(key):45s} {counts[key] / 2**20:9.1f} MiB")
    print(f"  {'total':45s} {sum(counts.values()) / 2**20:9.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
