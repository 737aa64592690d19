"""DeepSpeed checkpoints that are atomic and carry everything exact resume needs.

* `save_checkpoint` is called on every rank (calling it on rank 0 alone hangs in DeepSpeed's
  collectives).
* DeepSpeed's own `latest` is written by rank 0 before the other ranks finish writing, so a crash
  there could point `latest` at a torn checkpoint. megamerge saves with `save_latest=False`,
  waits for every rank, and only then publishes the tag: first a `complete` marker inside the
  tag, then `latest` via write-to-temp + fsync + rename. A crash at any point leaves the previous
  `latest` loadable.
* Per-rank state (data-loader position, RNG states) is gathered to every rank and stored in
  `client_state["rank_states"]`, indexed by global rank, because DeepSpeed writes `client_state`
  from one rank only.
* `client_state["family"]` names the model family ("mergedna", "carmania") and
  `client_state["model_config"]` its config, so tools can rebuild the model from the checkpoint
  alone (`checkpoint_family`).
* A rank that cannot write its part (a full disk, above all) removes the partial step directory
  and raises CheckpointSaveError saying why; `latest` keeps naming the last complete checkpoint.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from megamerge.models.registry import family_of_preset, get_family

COMPLETE_MARKER = "megamerge_complete"
WEIGHTS_ONLY_MARKER = "megamerge_weights_only"
FULL_DISK_BYTES = 1 << 20
log = logging.getLogger("megamerge.train")


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def checkpoint_family(client_state: dict) -> str:
    """The model family a checkpoint holds. Checkpoints written before the family was stored name
    it through their --model preset (train.py keeps its arguments in client_state["args"]).
    Raises ValueError when neither is there or the name is unknown."""
    family = client_state.get("family")
    if family is None:
        preset = (client_state.get("args") or {}).get("model")
        if preset is None:
            raise ValueError("the checkpoint names no model family (no 'family' and no --model argument "
                             "in its client state)")
        return family_of_preset(preset).name
    return get_family(family).name


class CheckpointSaveError(RuntimeError):
    """This rank could not write its part of a checkpoint; the message is one line saying why and
    what is left on disk."""


def disk_is_full(error: BaseException, path: Path) -> bool:
    """ENOSPC anywhere in the exception chain, or (torch.save's C++ writer reports no errno) a file
    system with under 1 MiB left."""
    seen: BaseException | None = error
    while seen is not None:
        if getattr(seen, "errno", None) == errno.ENOSPC or "No space left" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    try:
        return shutil.disk_usage(path).free < FULL_DISK_BYTES
    except OSError:
        return False


def describe_failed_save(save_dir: Path, tag: str, error: BaseException) -> str:
    """Remove the partial `save_dir/tag` (it would keep a full disk full, and has no completion
    marker, so nothing loads it) and say why the save failed and which checkpoint `latest` names."""
    first_line = (str(error).strip().splitlines() or [""])[0]
    cause = ("no space left on the device" if disk_is_full(error, save_dir)  # a peer's crash reads as a lost
             else f"{type(error).__name__}: {first_line[:200]}")  # gloo connection on the other ranks
    try:
        usage = shutil.disk_usage(save_dir)
        space = f" ({usage.free / 2**20:.1f} MiB free of {usage.total / 2**20:.1f} MiB before cleaning up)"
    except OSError:
        space = ""
    shutil.rmtree(save_dir / tag, ignore_errors=True)
    latest = save_dir / "latest"
    kept = (f"{latest} still names {latest.read_text().strip()}, the last complete checkpoint"
            if latest.is_file() else "there is no earlier checkpoint")
    return (f"cannot write checkpoint {save_dir / tag}: {cause}{space}; removed the partial {tag}; {kept}. "
            "Free space or give another --save, then resume with --load")


def save(engine, save_dir: str | Path, iteration: int, client_state: dict, rank_state: dict) -> str:
    """Write `save_dir/global_step{iteration}` on all ranks and publish it as `latest`."""
    save_dir = Path(save_dir)
    tag = f"global_step{iteration}"
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, rank_state)
    state = dict(client_state, rank_states=gathered)
    try:
        engine.save_checkpoint(str(save_dir), tag=tag, client_state=state, save_latest=False)
    except Exception as e:  # torch.save on a full disk says only "basic_ios::clear: iostream error"
        raise CheckpointSaveError(describe_failed_save(save_dir, tag, e)) from e
    dist.barrier()  # every rank's files are on disk before the tag is published
    if dist.get_rank() == 0:
        # The marker also says what the checkpoint holds, so a resume can refuse the wrong model
        # with a clear message before DeepSpeed's strict load fails on the first mismatched tensor.
        summary = {"iteration": iteration,
                   **{k: client_state.get(k) for k in ("family", "model_config", "layout")}}
        atomic_write(save_dir / tag / COMPLETE_MARKER, json.dumps(summary) + "\n")
        atomic_write(save_dir / "latest", tag)
    dist.barrier()
    return tag


def latest_tag(load_dir: str | Path) -> str | None:
    """The published tag, or None when the directory has no checkpoint yet."""
    latest = Path(load_dir) / "latest"
    if not latest.is_file():
        return None
    tag = latest.read_text().strip()
    if not (Path(load_dir) / tag / COMPLETE_MARKER).is_file():
        raise RuntimeError(f"{latest} names {tag!r}, which has no {COMPLETE_MARKER} marker: the checkpoint "
                           "is incomplete (was it written by another tool?)")
    return tag


def summary(load_dir: str | Path, tag: str) -> dict | None:
    """What `save` recorded in the completion marker (iteration, family, model_config, layout);
    None for markers written before it recorded anything."""
    try:
        recorded = json.loads((Path(load_dir) / tag / COMPLETE_MARKER).read_text())
    except (OSError, ValueError):
        return None
    return recorded if isinstance(recorded, dict) else None


def load(engine, load_dir: str | Path, finetune: bool) -> tuple[str, dict] | None:
    """Load `latest` on every rank; returns (tag, client_state) or None if there is nothing to load.
    Weights-only checkpoints come back with client_state["weights_only"] set."""
    tag = latest_tag(load_dir)
    if tag is None:
        return None
    if not finetune and (Path(load_dir) / tag / WEIGHTS_ONLY_MARKER).is_file():
        # Written by tools/convert_checkpoint.py --from-portable: weights only, no optimizer or data
        # state to resume, so it always loads with --finetune semantics.
        log.info("%s/%s holds weights only (converted from a portable model): loading as --finetune",
                 load_dir, tag)
        finetune = True
    path, client_state = engine.load_checkpoint(
        str(load_dir), tag=tag,
        load_module_only=finetune,
        load_optimizer_states=not finetune,
        load_lr_scheduler_states=False,
    )
    if path is None:
        raise RuntimeError(f"DeepSpeed could not load checkpoint {tag!r} from {load_dir}")
    client_state = dict(client_state or {})
    client_state["weights_only"] = client_state.get("weights_only", False) or finetune
    return tag, client_state
