"""DeepSpeed engines for tests/distributed/test_convert_checkpoint.py, run under torchrun:
`eval_tp2` loads a checkpoint at TP=2 as train.py builds the engine and writes its eval losses;
`bf16` trains 2 bf16 ZeRO-2 steps over DP=2, saves, and writes the optimizer's master weights.
The fixed eval batch and `eval_losses` are shared with the test, which scores portable models
with them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from megamerge.data.mock_data import MockGenome
from megamerge.models.common.batch import Batch
from megamerge.models.common.keyed_random import sample_seeds
from megamerge.models.registry import family_of_model

SEQ, EVAL_BATCH, EVAL_SEED = 128, 4, 11


def eval_batch() -> tuple[torch.Tensor, torch.Tensor]:
    index = torch.arange(EVAL_BATCH) + 1000  # samples training never saw
    return MockGenome(SEQ, seed=5).batch(index), sample_seeds(EVAL_SEED, index)


@torch.no_grad()
def eval_losses(model) -> dict[str, float]:
    """The losses train.py logs for the model's family (MergeDNA: loss, mtr, latent_mtr, amtm;
    CARMANIA: loss, nt, tm) on the fixed eval batch."""
    model.eval()
    ids, seeds = eval_batch()
    out = model.compute_losses(ids, seeds)
    return {k: float(out[k]) for k in family_of_model(model).loss_keys}


def _init_worker():
    from megamerge.training.distributed import init_distributed

    torch.set_num_threads(1)
    return init_distributed()


def worker_eval_tp2(ckpt: Path, out: Path) -> None:
    """Load `ckpt` at TP=2 as train.py builds the engine and report eval losses."""
    import deepspeed
    import torch.distributed as dist

    from megamerge.models import build_model
    from megamerge.parallel import ModelParallelUnit, apply_tensor_parallel, initialize_model_parallel
    from megamerge.training import checkpointing
    from megamerge.training.objective import PretrainingObjective

    _init_worker()
    parallel = initialize_model_parallel(2, 1)
    state = json.loads((ckpt / "run_config.json").read_text())
    torch.manual_seed(0)  # a different init than training: only the loaded weights can match
    model = build_model(state["family"], state["model_config"])
    apply_tensor_parallel(model, parallel.tp_group)
    config = {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1, "train_batch_size": 1,
              "optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "torch_adam": True}},
              "zero_optimization": {"stage": 2}}
    engine, _, _, _ = deepspeed.initialize(model=PretrainingObjective(model),
                                           model_parameters=model.parameters(),
                                           config=config, mpu=ModelParallelUnit(parallel))
    checkpointing.load(engine, ckpt, finetune=True)
    losses = eval_losses(model)
    if dist.get_rank() == 0:
        out.write_text(json.dumps(losses))
    dist.barrier()
    dist.destroy_process_group()


def worker_bf16(save: Path, out: Path) -> None:
    """Train 2 steps with bf16 + ZeRO-2 over DP=2, save, and dump the optimizer's master weights."""
    import deepspeed
    import torch.distributed as dist
    from deepspeed.utils import safe_get_full_fp32_param
    from safetensors.torch import save_file

    from megamerge import __version__
    from megamerge.models import MergeDNA, MergeDNAConfig
    from megamerge.training import checkpointing
    from megamerge.training.objective import PretrainingObjective

    _init_worker()
    torch.manual_seed(1234)
    cfg = MergeDNAConfig.from_preset("tiny")
    model = MergeDNA(cfg)
    config = {"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 1, "train_batch_size": 4,
              "bf16": {"enabled": True},
              "optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "torch_adam": True}},
              "zero_optimization": {"stage": 2, "overlap_comm": False, "contiguous_gradients": True}}
    engine, _, _, _ = deepspeed.initialize(model=PretrainingObjective(model),
                                           model_parameters=model.parameters(), config=config)
    rank = dist.get_rank()
    for it in range(2):
        index = torch.arange(2) + 4 * it + 2 * rank
        loss = engine(Batch(MockGenome(SEQ, seed=3).batch(index), sample_seeds(3, index)))["loss"]
        engine.backward(loss)
        engine.step()
    client_state = {"iteration": 2, "consumed_samples": 8, "family": "mergedna",
                    "model_config": cfg.to_dict(), "args": {},
                    "megamerge_version": __version__, "layout": {"tp": 1, "pp": 1, "dp": 2}}
    checkpointing.save(engine, save, 2, client_state, {"data": None, "rng": checkpointing.rng_state()})
    master = {name: safe_get_full_fp32_param(p).detach().clone() for name, p in model.named_parameters()}
    module = {name: p.detach().float().clone() for name, p in model.named_parameters()}
    if rank == 0:
        assert next(model.parameters()).dtype == torch.bfloat16
        save_file(master, str(out / "master.safetensors"))
        save_file(module, str(out / "bf16_module.safetensors"))
    dist.barrier()
    dist.destroy_process_group()


WORKERS = {"eval_tp2": worker_eval_tp2, "bf16": worker_bf16}


if __name__ == "__main__":
    WORKERS[sys.argv[1]](*map(Path, sys.argv[2:]))
