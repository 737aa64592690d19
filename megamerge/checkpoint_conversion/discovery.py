"""Find the files of one megamerge DeepSpeed checkpoint and check that every shard is there.

    CKPT_DIR/latest                                   tag of the newest complete checkpoint
    CKPT_DIR/global_stepN/megamerge_complete          written after every rank finished
    CKPT_DIR/global_stepN/mp_rank_{m:02d}_model_states.pt            one per model-parallel rank
    CKPT_DIR/global_stepN/[bf16_]zero_pp_rank_{d}_mp_rank_{m:02d}_optim_states.pt
                                                      one per (ZeRO partition, model-parallel) rank
    CKPT_DIR/global_stepN/layer_{l:02d}-model_{t:02d}-model_states.pt   pipeline runs only

The model-parallel rank is m = pp_rank * tp + tp_rank (megamerge's ModelParallelUnit and
DeepSpeed's pipeline grid agree on it). ZeRO partitions d run over the data-parallel ranks, and
under sequence parallelism over DP x SP (every SP rank holds whole parameters). The layout itself
is read from `client_state["layout"]`, which train.py stores, so a missing file is reported by
name instead of as a short glob.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from megamerge.training.checkpointing import COMPLETE_MARKER

from .errors import ConversionError
from .safe_load import load_deepspeed_file


@dataclass
class CheckpointFiles:
    directory: Path  # CKPT_DIR/tag
    tag: str
    tp: int
    pp: int
    dp: int
    client_state: dict  # mp_rank_00_model_states.pt minus the tensors
    model_states: dict[int, Path] = field(default_factory=dict)  # mp rank -> file
    optim_states: dict[tuple[int, int], Path] = field(default_factory=dict)  # (mp rank, partition) -> file
    sp: int = 1  # sequence-parallel size

    @property
    def zero_partitions(self) -> int:
        return self.dp * self.sp

    @staticmethod
    def mp_rank(pp_rank: int, tp_rank: int, tp: int) -> int:
        return pp_rank * tp + tp_rank


def resolve_tag(load_dir: Path, tag: str | None) -> str:
    if not load_dir.is_dir():
        raise ConversionError(f"--load {load_dir}: no such directory")
    tags = sorted((p.name for p in load_dir.iterdir()
                   if p.is_dir() and re.fullmatch(r"global_step\d+", p.name)),
                  key=lambda t: int(t[len("global_step"):]))
    if tag is None:
        latest = load_dir / "latest"
        if not latest.is_file():
            raise ConversionError(f"--load {load_dir}: no 'latest' file; pass --tag "
                                  f"(available: {', '.join(tags) or 'none'})")
        tag = latest.read_text().strip()
    if not (load_dir / tag).is_dir():
        raise ConversionError(f"--tag {tag}: no such checkpoint in {load_dir} "
                              f"(available: {', '.join(tags) or 'none'})")
    if not (load_dir / tag / COMPLETE_MARKER).is_file():
        raise ConversionError(f"{load_dir / tag} has no {COMPLETE_MARKER} marker: the checkpoint was not "
                              "completely written (a crash during the save?); convert an earlier tag")
    return tag


def _client_state(state: dict) -> dict:
    return {k: v for k, v in state.items() if k not in ("module", "optimizer", "param_shapes", "rank_states")}


def find_checkpoint(load_dir: str | Path, tag: str | None = None,
                    with_optimizer: bool = True) -> CheckpointFiles:
    """The files of `tag` (default: `latest`); ConversionError names a missing one (the optimizer
    partitions only `with_optimizer`)."""
    load_dir = Path(load_dir)
    tag = resolve_tag(load_dir, tag)
    directory = load_dir / tag
    first = directory / "mp_rank_00_model_states.pt"
    state = load_deepspeed_file(first)
    layout = state.get("layout")
    if not isinstance(layout, dict) or "model_config" not in state:
        raise ConversionError(f"{first} has no megamerge layout/model_config in its client state: it was not "
                              "written by megamerge/train.py")
    tp, pp, dp = int(layout["tp"]), int(layout["pp"]), int(layout["dp"])
    files = CheckpointFiles(directory, tag, tp, pp, dp, _client_state(state),
                            sp=int(layout.get("sp", 1)))
    bf16_prefix = any(directory.glob("bf16_zero_pp_rank_*_optim_states.pt"))
    prefix = "bf16_zero_pp_rank" if bf16_prefix else "zero_pp_rank"
    missing = []
    for m in range(tp * pp):
        files.model_states[m] = directory / f"mp_rank_{m:02d}_model_states.pt"
        for d in range(files.zero_partitions if with_optimizer else 0):
            files.optim_states[(m, d)] = directory / f"{prefix}_{d}_mp_rank_{m:02d}_optim_states.pt"
    missing += [p for p in files.model_states.values() if not p.is_file()]
    missing += [p for p in files.optim_states.values() if not p.is_file()]
    if missing:
        names = (", ".join(p.name for p in missing[:6])
                 + (f" and {len(missing) - 6} more" if len(missing) > 6 else ""))
        raise ConversionError(f"{directory}: missing checkpoint shard(s) {names} (the checkpoint was "
                              f"written at TP={tp} PP={pp} DP={dp}"
                              f"{f' SP={files.sp}' if files.sp > 1 else ''})")
    return files
