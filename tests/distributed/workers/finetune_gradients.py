"""Run under torchrun by tests/distributed/test_finetune_data_parallel.py: the gradient of one
fine-tuning step (full method, a global batch of 15: uneven shards on 2 ranks) as tools/finetune.py
computes it, before any update. Rank 0 writes OUT.npz: the summed gradients, the global loss, and
two deliberately wrong variants as negative controls: rank 0's own share without the all-reduce,
and the summed gradient counted twice.

    torchrun --nproc-per-node N -m tests.distributed.workers.finetune_gradients MODEL TASK OUT
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from megamerge.finetune.data_parallel import DataParallel
from megamerge.finetune.loop import LoopSettings, train_step
from megamerge.finetune.run import prepare
from tools.finetune import build_parser

GLOBAL_BATCH = np.arange(15)


class WithoutAllReduce(DataParallel):
    def sum_gradients(self, params, extra):
        return extra


def step_gradients(model, data, dp: DataParallel,
                   settings: LoopSettings) -> tuple[dict[str, np.ndarray], float]:
    params = [p for p in model.parameters() if p.requires_grad]
    no_update = torch.optim.SGD(params, lr=0.0)  # train_step's own step, leaving the weights as they were
    loss = train_step(model, no_update, params, data.train, GLOBAL_BATCH, dp, settings)
    return {n: p.grad.double().numpy().copy() for n, p in model.named_parameters() if p.requires_grad}, loss


def main(model_dir: str, task_dir: str, out: str) -> None:
    options = build_parser().parse_args(["--model", model_dir, "--task", task_dir, "--out", out,
                                         "--method", "full", "--seeds", "1"])
    _, _, data, model = prepare(options)
    dp = DataParallel.from_env()
    settings = LoopSettings(lr=0.0, clip_grad=0.0, progress=False)
    summed, loss = step_gradients(model, data, dp, settings)
    alone, _ = step_gradients(model, data, WithoutAllReduce(dp.rank, dp.world_size, dp.device), settings)
    if dp.is_main:
        np.savez(out, loss=np.float64(loss), **{f"summed/{n}": g for n, g in summed.items()},
                 **{f"alone/{n}": g for n, g in alone.items()},
                 **{f"twice/{n}": 2 * g for n, g in summed.items()})
    dp.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
