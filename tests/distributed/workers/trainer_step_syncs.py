"""One `Trainer.train_step` (2 micro-steps of the tiny preset, mock data, one process) with the
host syncs counted (tests/helpers.counted_host_syncs), after a first step that pays DeepSpeed's
one-time set-up. The counted step is the run's last, so it logs and computes the merge gradient
norms (training/grad_norms.py). Writes {"syncs": {"file:function": calls}, "grad_norms": the step's
norm keys} as JSON to argv[1]."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from megamerge.training.arguments import parse_args
from megamerge.training.trainer import Trainer
from tests.helpers import CPU_CONFIG, counted_host_syncs


def main(out: Path) -> None:
    args = parse_args(["--ds_config", str(CPU_CONFIG), "--mock-data", "--model", "tiny",
                       "--seq-length", "256", "--micro-batch-size", "2", "--global-batch-size", "4",
                       "--train-iters", "2",
                       "--num-workers", "0", "--eval-interval", "100"])
    trainer = Trainer(args)
    trainer.train_step()
    with counted_host_syncs() as counts:
        step = trainer.train_step()
    out.write_text(json.dumps({"syncs": {f"{file}:{function}": n for (file, function), n in counts.items()},
                               "grad_norms": {k: v is not None for k, v in step.grad_norms.items()}}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
