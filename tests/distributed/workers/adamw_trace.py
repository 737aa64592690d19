"""The few AdamW steps a parallel worker takes on its reference and its split model alike, in
float64 with a small lr (tensor_parallel_mergedna.py says why), returning the loss of each."""

from __future__ import annotations

from collections.abc import Callable

import torch

from megamerge.models.common.keyed_random import sample_seeds


def adamw_losses(net: torch.nn.Module, batch_at: Callable[[torch.Tensor], torch.Tensor], iters: int,
                 batch: int, lr: float, loss_scale: float = 1.0,
                 after_backward: Callable[[torch.nn.Module], None] | None = None) -> list[float]:
    """`batch_at(index)`: the input ids of the samples `index`; iteration i reads samples
    [batch * (i + 1), batch * (i + 2)). `loss_scale` and `after_backward` (e.g. summing the
    gradients over a group) make the split model's step the one its engine would take."""
    net.double()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    losses = []
    for it in range(iters):
        opt.zero_grad(set_to_none=True)
        index = torch.arange(batch) + batch * (it + 1)
        out = net.compute_losses(batch_at(index), sample_seeds(3, index))
        (out["loss"] * loss_scale).backward()
        if after_backward is not None:
            after_backward(net)
        opt.step()
        losses.append(float(out["loss"]))
    return losses
