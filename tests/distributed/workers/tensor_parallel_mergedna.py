"""Run on 2 ranks by tests/distributed/test_parallel_tp.py: each rank builds the same full MergeDNA
(the TP=1 reference) and a TP=2 copy cut from it; rank 0 writes what it measured (forward losses,
gathered gradients, a few AdamW iterations, which parameters are flagged as split) to a JSON file."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import torch

from megamerge.data.mock_data import MockGenome
from megamerge.models import MergeDNA, MergeDNAConfig
from megamerge.models.common.keyed_random import sample_seeds
from tests.distributed.workers.adamw_trace import adamw_losses

SEQ, BATCH, ITERS, LR = 128, 4, 3, 2e-4


def _losses(out: dict) -> dict:
    return {k: float(out[k]) for k in ("loss", "mtr", "latent_mtr", "amtm")}


def worker(out_path: Path, overrides: dict | None = None) -> None:
    import torch.distributed as dist

    from megamerge.parallel import apply_tensor_parallel, initialize_model_parallel
    from megamerge.parallel.tensor_parallel import gather_full, is_tensor_parallel

    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    state = initialize_model_parallel(tp=2, pp=1)
    # options from tests/distributed/test_fidelity_layouts.py
    cfg = MergeDNAConfig.from_preset("tiny", **(overrides or {}))
    torch.manual_seed(0)
    ref = MergeDNA(cfg)
    model = copy.deepcopy(ref)
    blocks = apply_tensor_parallel(model, state.tp_group)

    index = torch.arange(BATCH)
    ids, seeds = MockGenome(SEQ, seed=3).batch(index), sample_seeds(3, index)

    ref_out, out = ref.compute_losses(ids, seeds), model.compute_losses(ids, seeds)
    ref_out["loss"].backward()
    out["loss"].backward()
    forward = {k: (v, _losses(out)[k]) for k, v in _losses(ref_out).items()}

    ref_params = dict(ref.named_parameters())
    worst, max_diff, max_grad, replicated_diff = None, 0.0, 0.0, 0.0
    for name, p in model.named_parameters():
        full = gather_full(p.grad, p, state.tp_group)
        diff = float((full - ref_params[name].grad).abs().max())
        max_grad = max(max_grad, float(ref_params[name].grad.abs().max()))
        if diff > max_diff:
            worst, max_diff = name, diff
        if not is_tensor_parallel(p):  # must be bitwise equal across TP ranks
            other = p.grad.clone()
            dist.broadcast(other, src=state.tp_ranks[0], group=state.tp_group)
            replicated_diff = max(replicated_diff, float((other - p.grad).abs().max()))

    # A few optimizer steps. A small lr: Adam's first steps move each weight by about lr * sign(g),
    # so a gradient element that is ~0 (its sign set by rounding, which TP's split reductions
    # change) moves by a full lr either way; lr 2e-4 keeps that well below the tolerance.
    # In float64: latent MTR's merges are hard choices on hidden states that TP's split reductions
    # round differently, and in float32 a near-tie between two almost identical latent tokens
    # flips about one tiny batch in 40 (per_block), which redraws that batch's AMTM mask. The
    # merge scores are computed in float32 from the float64 states, so both nets choose alike.
    losses = [adamw_losses(net, MockGenome(SEQ, seed=3).batch, ITERS, BATCH, LR) for net in (ref, model)]

    if dist.get_rank() == 0:
        out_path.write_text(json.dumps({
            "forward": forward, "max_grad_diff": max_diff, "worst_grad": worst, "max_grad": max_grad,
            "n_params": len(dict(model.named_parameters())), "n_ref_params": len(ref_params),
            "train_losses": losses, "latent_blocks": blocks,
            "flagged": [n for n, p in model.named_parameters() if is_tensor_parallel(p)],
            "replicated_grad_rank_diff": replicated_diff,
        }))
    dist.barrier()
    dist.destroy_process_group()



if __name__ == "__main__":
    worker(Path(sys.argv[1]), overrides=json.loads(sys.argv[2]) if len(sys.argv) > 2 else None)
