"""Run by tests/distributed/test_grad_norm_metrics.py under torchrun: `Trainer(args).run()` for one
logged iteration (what megamerge/train.py runs) with its micro-batches and its StepResult recorded,
then the same iteration's gradient from a plain PyTorch model built with the run's seed. argv[2] is a
JSON object {layout: [flags]}: the layouts run one after another in this one launch (the process
start-up, most of a launch's time, is paid once), each from its own Trainer, process groups and
engine. Each rank writes argv[1]/<layout>/rank<R>.json: the group norms its trainer computed, and
the reference norms.

The reference is independent of DeepSpeed: no engine, no ZeRO partitions, no tensor-parallel split
(each rank builds the unsplit model). Its loss is averaged over the rank's micro-batches, then its
gradients over the data-parallel ranks, as the global batch's mean loss prescribes."""

from __future__ import annotations

import gc
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from megamerge.training.arguments import parse_args
from megamerge.training.trainer import StepResult, Trainer


def norm(params: list[torch.nn.Parameter]) -> float:
    return float(torch.stack([p.grad.square().sum() for p in params if p.grad is not None]).sum().sqrt())


def reference_norms(trainer: Trainer, batches: list) -> dict[str, float]:
    torch.manual_seed(trainer.args.seed)  # as Trainer.build_model: the run's initial weights
    model = trainer.family.model_class(trainer.cfg).train()
    for batch in batches:
        out = model.compute_losses(batch.input_ids.cpu(), batch.seeds.cpu(), batch.base_weights.cpu())
        (out["loss"] / len(batches)).backward()
    groups = trainer.family.grad_norm_groups(model)
    # this rank's micro-batches alone: a missing data-parallel reduction would give this
    local = {f"{key}_this_rank": norm(params) for key, params in groups.items()}
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad, group=trainer.parallel.dp_group)
            p.grad /= trainer.parallel.dp
    return {**local, **{key: norm(params) for key, params in groups.items()},
            "grad_norm": norm(list(model.parameters()))}


def run_layout(out_dir: Path, flags: list[str]) -> None:
    args = parse_args([*flags, "--save", str(out_dir / "run"), "--train-iters", "1", "--eval-iters", "1",
                       "--num-workers", "0"])
    trainer = Trainer(args)
    torch.set_num_threads(1)
    batches, steps = [], []
    micro_batch, log_step = trainer.micro_batch, trainer.log_step

    def recorded_micro_batch(iteration: int, micro_step: int):
        batches.append(micro_batch(iteration, micro_step))
        return batches[-1]

    def recorded_log_step(step: StepResult) -> None:
        steps.append(step.grad_norms)
        log_step(step)

    trainer.micro_batch, trainer.log_step = recorded_micro_batch, recorded_log_step
    trainer.run()
    reference = reference_norms(trainer, batches) if trainer.family.grad_norm_groups else {}
    (out_dir / f"rank{dist.get_rank()}.json").write_text(json.dumps({"step": steps[0],
                                                                      "reference": reference}))


def main(out_dir: Path, layouts: dict[str, list[str]]) -> None:
    for name, flags in layouts.items():
        (out_dir / name).mkdir(parents=True, exist_ok=True)
        run_layout(out_dir / name, flags)
        gc.collect()  # the previous layout's engine and process groups go before the next is built
        dist.barrier()


if __name__ == "__main__":
    main(Path(sys.argv[1]), json.loads(sys.argv[2]))
