"""Pre-train MergeDNA (or CARMANIA, `--model carmania-*`) with DeepSpeed.

    deepspeed megamerge/train.py --ds_config ds_configs/zero2.json --model 380m --data DIR --save CKPT
    torchrun --nproc-per-node 8 megamerge/train.py ...        srun megamerge/train.py ...  (rank from env)

Each iteration runs `accumulation` micro-steps of the model's objective, then one optimizer step
(DeepSpeed ZeRO); `--load` resumes bit for bit; SIGTERM / SIGUSR1 save a checkpoint and exit 0
(SLURM requeue builds on this). The loop itself is megamerge/training/trainer.py.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: `deepspeed megamerge/train.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from megamerge.training.arguments import parse_args
from megamerge.training.ds_config import ConfigError
from megamerge.training.input_checks import report_once
from megamerge.training.trainer import Trainer, TrainingStopped


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return Trainer(args).run()
    except (ConfigError, TrainingStopped) as e:  # every rank meets it: one line, from rank 0
        # The run is over: while another rank waits in report_once for its launcher to stop it, the
        # launcher's SIGTERM must end it, not ask the Trainer's StopRequest for a checkpoint at an
        # iteration boundary that never comes (the launcher would kill it only after its own grace
        # period, 30 s for deepspeed and torchrun).
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, signal.SIG_DFL)
        report_once("megamerge/train.py", str(e))
        return 2


if __name__ == "__main__":
    sys.exit(main())
