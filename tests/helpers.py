"""What several test files share: repository paths, a free TCP port, and the launchers of real
multi-process runs (`megamerge/train.py` under the DeepSpeed launcher, worker modules under torchrun).

Every subprocess gets the repository on PYTHONPATH from `subprocess_env`, so that a worker module
(`python -m tests.distributed.workers.…`) and the code it tests import the same way pytest does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from megamerge.free_port import free_port

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "megamerge" / "train.py"
DEEPSPEED = Path(sys.executable).parent / "deepspeed"
TORCHRUN = Path(sys.executable).parent / "torchrun"
CPU_CONFIG = REPO / "ds_configs" / "cpu.json"

# Small and fast: a tiny model on 256-base mock sequences.
TINY_ARGS = [
    "--ds_config", str(CPU_CONFIG), "--mock-data", "--model", "tiny", "--seq-length", "256",
    "--lr", "1e-3", "--lr-warmup-iters", "2", "--log-interval", "1", "--num-workers", "0",
]


def subprocess_env(**extra: str) -> dict:
    """This environment plus the repository on PYTHONPATH, one OpenMP thread per process (ranks share
    the machine's few cores), and `extra`."""
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def describe(proc: subprocess.CompletedProcess) -> str:
    return (f"exit {proc.returncode}\n--- stdout ---\n{proc.stdout[-4000:]}\n"
            f"--- stderr ---\n{proc.stderr[-4000:]}")


# ------------------------------------------------------------------------- train.py launches
def train_command(nproc: int, args: list[str]) -> list[str]:
    return [str(DEEPSPEED), "--num_gpus", str(nproc), "--master_port", str(free_port()), str(TRAIN), *args]


def run_train(nproc: int, args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(train_command(nproc, args), cwd=cwd, env=subprocess_env(), capture_output=True,
                          text=True, timeout=timeout, check=False)


def read_metrics(save_dir: Path, split: str = "train") -> dict[int, dict]:
    """iteration -> record; a later line for the same iteration (after a resume) wins."""
    out = {}
    for line in (Path(save_dir) / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("split", "train") == split:
            out[record["iteration"]] = record
    return out


# ------------------------------------------------------------------------ worker launches
def run_workers(module: str, nproc: int, *args: object, timeout: int = 600) -> subprocess.CompletedProcess:
    """`torchrun --nproc-per-node nproc -m module args` (gloo on CPU); fails the test unless every
    rank exits 0. `module` is a dotted name under tests.distributed.workers."""
    proc = subprocess.run([str(TORCHRUN), "--nproc-per-node", str(nproc), "--master-port", str(free_port()),
                           "-m", module, *map(str, args)],
                          env=subprocess_env(), capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, describe(proc)
    return proc


@contextmanager
def small_tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """A real file system of `size` (e.g. "48m") mounted at `mount` for the test, to fill on
    purpose; skips the test where mounting needs a root it does not have."""
    import pytest

    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


SYNCING_TENSOR_METHODS = ("item", "tolist", "__float__", "__int__", "__bool__", "__index__")
# Given host data and a device, these copy it there from pageable memory, which CUDA does by
# waiting for the stream (a non_blocking=False copy): a sync as much as .item() is.
HOST_TO_DEVICE_FACTORIES = ("tensor", "as_tensor")


@contextmanager
def counted_host_syncs() -> Iterator[dict]:
    """{(file under megamerge/, function): calls} of the Tensor methods that wait for the device
    (`SYNCING_TENSOR_METHODS`) and of the factories given a device (`HOST_TO_DEVICE_FACTORIES`),
    made while the context lives, each attributed to the innermost megamerge function on the stack
    (a call inside DeepSpeed counts for the megamerge code that called into it). Counted on the CPU
    by patching them: the code path is CUDA's."""
    import collections
    import traceback

    import torch

    package = REPO / "megamerge"
    counts = collections.Counter()
    originals = {name: getattr(torch.Tensor, name) for name in SYNCING_TENSOR_METHODS}
    factories = {name: getattr(torch, name) for name in HOST_TO_DEVICE_FACTORIES}

    def count() -> None:
        for frame in reversed(traceback.extract_stack()[:-2]):
            path = Path(frame.filename).resolve()
            if package in path.parents:
                counts[(str(path.relative_to(package)), frame.name)] += 1
                break

    def counting(original):
        def method(self, *args, **kwargs):
            count()
            return original(self, *args, **kwargs)
        return method

    def counting_factory(original):
        def factory(*args, **kwargs):
            if kwargs.get("device") is not None:
                count()
            return original(*args, **kwargs)
        return factory

    for name, original in originals.items():
        setattr(torch.Tensor, name, counting(original))
    for name, original in factories.items():
        setattr(torch, name, counting_factory(original))
    try:
        yield counts
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)
        for name, original in factories.items():
            setattr(torch, name, original)
