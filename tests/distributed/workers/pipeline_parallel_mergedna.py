"""Run by tests/distributed/test_parallel_pp.py under torchrun, on TP x PP ranks (2 for PP=2, 4 for
TP=2 x PP=2). Each rank builds the full model; a copy is split by tensor parallelism (if any) and
cut into a 2-stage DeepSpeed pipeline (ZeRO-1). The optimizer is plain SGD so that one step's
weight change is exactly -lr x gradient: that is how the pipeline's gradients, which the engine
consumes inside train_batch, are gathered over TP ranks and compared with the unsplit model's.
Rank 0 writes the comparison to a JSON file."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import torch

from megamerge.data.mock_data import MockGenome
from megamerge.models import MergeDNA, MergeDNAConfig
from megamerge.models.common.batch import Batch
from megamerge.models.common.keyed_random import sample_seeds
from megamerge.models.common.losses import softmask_base_weights
from megamerge.models.mergedna.pipeline_layers import latent_merge_layer_indices

SEQ, MICRO, ACCUM, ITERS = 128, 2, 2, 1
# Large enough that (w_before - w_after) / lr resolves the gradient to ~1e-6. Training over several
# iterations (AdamW, through train.py) is compared in tests/distributed/test_parallel_train.py.
LRS = (0.02,)


def _batches(it: int, softmask_weight: float):
    """A Batch per micro-step; with softmask_weight != 1 the middle third of every row weighs
    softmask_weight, as a soft-masked repeat would."""
    out = []
    for m in range(ACCUM):
        index = torch.arange(MICRO) + (it * ACCUM + m) * MICRO
        ids = MockGenome(SEQ, seed=5).batch(index)
        softmask = torch.zeros(ids.shape, dtype=torch.bool)
        softmask[:, SEQ // 3 : 2 * SEQ // 3] = True
        weights = softmask_base_weights(softmask, softmask_weight)
        out.append(Batch(ids, sample_seeds(5, index), weights))
    return out


def worker(out_path: Path, tp: int, pp: int, overrides: dict | None = None,
           softmask_weight: float = 1.0) -> None:
    import deepspeed
    import torch.distributed as dist

    from megamerge.models.mergedna.pipeline import MergeDNAPipeline
    from megamerge.parallel import apply_tensor_parallel, initialize_model_parallel
    from megamerge.parallel.tensor_parallel import gather_full
    from megamerge.training.distributed import init_distributed

    init_distributed()
    torch.set_num_threads(1)
    parallel = initialize_model_parallel(tp=tp, pp=pp)
    # options from tests/distributed/test_fidelity_layouts.py
    cfg = MergeDNAConfig.from_preset("tiny", **(overrides or {}))
    torch.manual_seed(0)
    model = MergeDNA(cfg)
    ref = copy.deepcopy(model)
    if tp > 1:
        apply_tensor_parallel(model, parallel.tp_group)
    names = {id(p): n for n, p in model.named_parameters()}
    pipe = MergeDNAPipeline(model, parallel)
    parts = pipe.module.parts
    params = list(pipe.module.parameters())
    config = {"train_micro_batch_size_per_gpu": MICRO, "gradient_accumulation_steps": ACCUM,
              "train_batch_size": MICRO * ACCUM, "gradient_clipping": 0.0, "zero_optimization": {"stage": 1},
              "zero_allow_untested_optimizer": True, "steps_per_print": 10**9,
              "pipeline": {"pipe_partitioned": False, "grad_partitioned": False}}
    engine, _, _, _ = deepspeed.initialize(model=pipe.module, model_parameters=params, config=config,
                                           optimizer=torch.optim.SGD(params, lr=LRS[0]))
    ref_opt = torch.optim.SGD(ref.parameters(), lr=LRS[0])
    ref_params = dict(ref.named_parameters())

    forward, grad_report = None, None
    for it in range(ITERS):
        batches = _batches(it, softmask_weight)
        for group in (*engine.optimizer.param_groups, *ref_opt.param_groups):
            group["lr"] = LRS[it]
        before = {names[id(p)]: p.detach().clone() for p in pipe.module.parameters()}
        got = pipe.train_step(engine, batches)
        ref_opt.zero_grad(set_to_none=True)
        sums = {k: 0.0 for k in ("loss", "mtr", "latent_mtr", "amtm")}
        for batch in batches:
            o = ref.compute_losses(batch.input_ids, batch.seeds, batch.base_weights)
            (o["loss"] / ACCUM).backward()
            for k in sums:
                sums[k] += float(o[k]) / ACCUM
        if it == 0:
            forward = {k: (sums[k], got[k]) for k in sums}
            diffs = {}
            for p in pipe.module.parameters():  # the same order on every TP rank of a stage
                name = names[id(p)]
                grad = gather_full((before[name] - p.detach()) / LRS[0], p, parallel.tp_group)
                diffs[name] = (float((grad - ref_params[name].grad).abs().max()),
                               float(ref_params[name].grad.abs().max()))
            grad_report = [None] * dist.get_world_size()
            dist.all_gather_object(grad_report, diffs if parallel.tp_rank == 0 else {})

    if dist.get_rank() == 0:
        merged = {k: v for d in grad_report for k, v in d.items()}
        worst = max(merged, key=lambda k: merged[k][0])
        out_path.write_text(json.dumps({
            "forward": forward,
            "max_grad_diff": merged[worst][0], "worst_grad": worst,
            "max_grad": max(v[1] for v in merged.values()),
            "n_compared": sum(len(d) for d in grad_report), "n_params": len(ref_params),
            "stage_params": [len(d) for d in grad_report if d],
            "merge_stages": [next(s for s in range(pp) if parts[s] <= i < parts[s + 1])
                             for i in latent_merge_layer_indices(cfg)],  # the stage of each merge point
        }))
    dist.barrier()



if __name__ == "__main__":
    worker(Path(sys.argv[1]), tp=int(sys.argv[2]), pp=int(sys.argv[3]),
           overrides=json.loads(sys.argv[4]) if len(sys.argv) > 4 else None,
           softmask_weight=float(sys.argv[5]) if len(sys.argv) > 5 else 1.0)
