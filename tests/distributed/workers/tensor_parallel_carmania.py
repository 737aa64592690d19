"""Run on 2 ranks by tests/distributed/test_carmania_tp.py: a small CARMANIA and a TP=2 copy of it
(every block split as megamerge.parallel splits MergeDNA's latent blocks); rank 0 writes losses,
gathered gradients and KV-cached generation logits of both to a JSON file."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import torch

from megamerge.models import Carmania, CarmaniaConfig

CFG = {"dim": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "ffn_dim": 160, "window": 8}


def worker(out_path: Path) -> None:
    import torch.distributed as dist

    from megamerge.parallel import initialize_model_parallel
    from megamerge.parallel.tensor_parallel import gather_full, is_tensor_parallel, parallelize_block
    from megamerge.parallel.tensor_parallel_plan import split_blocks

    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    state = initialize_model_parallel(tp=2, pp=1)
    torch.manual_seed(0)
    ref = Carmania(CarmaniaConfig(**CFG))
    model = copy.deepcopy(ref)
    blocks = split_blocks(model)  # every layer (the family spec names them)
    for block in blocks:
        parallelize_block(block, state.tp_group)

    ids = torch.randint(0, 4, (3, 50), generator=torch.Generator().manual_seed(1))
    ids[1, 10:15] = 4  # N
    ref_out, out = ref.compute_losses(ids), model.compute_losses(ids)
    ref_out["loss"].backward()
    out["loss"].backward()
    forward = {k: (float(ref_out[k]), float(out[k])) for k in ("loss", "nt", "tm")}
    ref_params = dict(ref.named_parameters())
    worst, max_diff, max_grad = None, 0.0, 0.0
    for name, p in model.named_parameters():
        diff = float((gather_full(p.grad, p, state.tp_group) - ref_params[name].grad).abs().max())
        max_grad = max(max_grad, float(ref_params[name].grad.abs().max()))
        if diff > max_diff:
            worst, max_diff = name, diff

    model.eval()
    ref.eval()
    with torch.no_grad():
        full, full_ref = model(ids), ref(ids)
    cache = model.new_cache()
    cached = torch.cat([model.forward_cached(ids[:, :7], cache)]
                       + [model.forward_cached(ids[:, t:t + 1], cache) for t in range(7, ids.shape[1])], 1)

    if dist.get_rank() == 0:
        out_path.write_text(json.dumps({
            "forward": forward, "max_grad_diff": max_diff, "worst_grad": worst, "max_grad": max_grad,
            "split_blocks": len(blocks),
            "flagged": [n for n, p in model.named_parameters() if is_tensor_parallel(p)],
            "cache_vs_full": float((cached - full).abs().max()),
            "tp_vs_tp1_logits": float((full - full_ref).abs().max()),
        }))
    dist.barrier()
    dist.destroy_process_group()



if __name__ == "__main__":
    worker(Path(sys.argv[1]))
