"""Run as one process (RANK 0 of WORLD_SIZE 1) by tests/distributed/test_train_runs.py: a crash
in the middle of writing a checkpoint (the file half written, then an exception) must leave the
previous checkpoint published and loadable, and an unpublished one refused. Prints "OK" at the end;
any failed check exits non-zero."""

import sys
from pathlib import Path
from types import SimpleNamespace

import deepspeed
import torch

from megamerge.models import MergeDNA, MergeDNAConfig
from megamerge.training import checkpointing
from megamerge.training.distributed import init_distributed
from megamerge.training.ds_config import resolve_ds_config
from megamerge.training.objective import PretrainingObjective


class SimulatedCrash(BaseException):
    """The process dying mid-write: a BaseException, so that `checkpointing.save`'s clean-up of a
    failed save (which handles Exceptions, a full disk above all) does not run, as it could not after
    a real crash, and the torn step directory stays on disk."""


def main(save: Path) -> None:
    init_distributed()
    args = SimpleNamespace(tensor_model_parallel_size=1, pipeline_model_parallel_size=1, micro_batch_size=2,
                           global_batch_size=2, lr=1e-3, adam_beta1=0.9, adam_beta2=0.95, adam_eps=1e-8,
                           weight_decay=0.0, clip_grad=1.0)
    config = resolve_ds_config("ds_configs/cpu.json", args, 1, False)

    def engine():
        torch.manual_seed(0)
        model = MergeDNA(MergeDNAConfig.from_preset("tiny"))
        return deepspeed.initialize(model=PretrainingObjective(model), model_parameters=model.parameters(),
                                    config=config)[0]

    first = engine()
    checkpointing.save(first, save, 1, {"iteration": 1}, {"data": {}, "rng": checkpointing.rng_state()})
    reference = {k: v.clone() for k, v in first.module.state_dict().items()}
    with torch.no_grad():
        for p in first.module.parameters():
            p.add_(1.0)

    # A crash in the middle of writing the next checkpoint: the file is half written, the process dies.
    real_save = torch.save
    def torn_save(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        if not isinstance(f, (str, Path)):  # in-memory buffers are not files on disk
            return
        path = Path(f)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        raise SimulatedCrash("simulated crash while writing " + path.name)
    torch.save = torn_save
    try:
        checkpointing.save(first, save, 2, {"iteration": 2}, {"data": {}, "rng": checkpointing.rng_state()})
        raise SystemExit("the simulated crash did not happen")
    except SimulatedCrash as e:
        print("crashed:", e)
    torch.save = real_save

    assert (save / "latest").read_text() == "global_step1", (save / "latest").read_text()
    assert ((save / "global_step2").exists()
            and not (save / "global_step2" / checkpointing.COMPLETE_MARKER).exists())
    second = engine()
    tag, state = checkpointing.load(second, save, finetune=False)
    assert tag == "global_step1" and state["iteration"] == 1, (tag, state)
    for k, v in second.module.state_dict().items():
        assert torch.equal(v, reference[k]), k
    (save / "latest").write_text("global_step2")
    try:
        checkpointing.latest_tag(save)
        raise SystemExit("an unpublished checkpoint was accepted")
    except RuntimeError as e:
        assert "incomplete" in str(e)
    print("OK")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
