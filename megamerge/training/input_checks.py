"""What train.py can check about its flags, corpus and checkpoint directories before DeepSpeed
starts: seconds of file-system reads instead of a traceback on every rank after a minute or more of
start-up, or a run that trains quietly on half-padded or half-dropped samples.

    refuse_bad_training_inputs(args)   # in train.py, before deepspeed.initialize

checks, in order: --micro-batch-size (and --global-batch-size) >= 1; --data is a directory holding
a prepare.py manifest that lists train shards which exist; --seq-length equals the manifest's
seq_len (shorter only with --allow-seq-length-crop); --load's `latest`, when there is one, names a
complete checkpoint, and a --load without one is --save itself (a first attempt); --save holds no
earlier run unless this run resumes it (or --start-over moves it aside). Each failure is one line
naming the flag and the path (and, for a missing step, the steps that do exist); --species-weights
names species the train split holds, with usable weights (species_mixing.py).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import typing
from pathlib import Path

from megamerge.data.shards import MANIFEST_FORMAT, MANIFEST_NAME, split_shards
from megamerge.data.species_mixing import (
    SpeciesWeightsError,
    resolve_species_weights,
    train_samples_by_species,
)
from megamerge.training.checkpointing import COMPLETE_MARKER, WEIGHTS_ONLY_MARKER

CROP_FLAG = "--allow-seq-length-crop"
STEP_DIR = re.compile(r"global_step(\d+)")


class TrainingInputError(ValueError):
    """A flag or input path of a training run that cannot work; the message is one line."""


def check_batch_flags(args: argparse.Namespace) -> None:
    for flag in ("micro_batch_size", "global_batch_size"):
        value = getattr(args, flag, None)
        if value is not None and value < 1:
            raise TrainingInputError(f"--{flag.replace('_', '-')} {value}: must be at least 1")


def read_corpus_manifest(data: str | Path) -> dict:
    """The manifest of a prepared corpus directory, or an error saying what the directory is instead."""
    data = Path(data)
    if not data.exists():
        raise TrainingInputError(f"--data {data}: no such directory; prepare a corpus with "
                                 f"data_prep/prepare.py --out {data}")
    if not data.is_dir():
        raise TrainingInputError(f"--data {data}: is a file, not a corpus directory "
                                 "(data_prep/prepare.py --out)")
    held = sorted(p.name for p in data.iterdir())
    if not held:
        raise TrainingInputError(f"--data {data}: empty directory; prepare a corpus with "
                                 f"data_prep/prepare.py --out {data}")
    path = data / MANIFEST_NAME
    if not path.is_file():
        shown = ", ".join(held[:5]) + (" ..." if len(held) > 5 else "")
        raise TrainingInputError(f"--data {data}: no {MANIFEST_NAME} (it holds {shown}): not a corpus "
                                 "written by data_prep/prepare.py, or one whose run did not finish")
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, OSError) as e:
        raise TrainingInputError(f"--data {data}: {path} cannot be read ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise TrainingInputError(f"--data {data}: {path} is not a megamerge shard manifest")
    return manifest


def check_train_shards(data: str | Path, manifest: dict) -> None:
    listed = [s for s in manifest.get("shards", []) if isinstance(s, dict)]
    shards = [s.get("path") for s in listed if s.get("split") == "train"]
    if not shards:
        raise TrainingInputError(f"--data {data}: the manifest lists no train shards (everything was held "
                                 "out or dropped when the corpus was cut; see its 'splits')")
    missing = [s for s in shards if not isinstance(s, str) or not (Path(data) / s).is_file()]
    if missing:
        shown = ", ".join(map(str, missing[:3])) + (" ..." if len(missing) > 3 else "")
        raise TrainingInputError(f"--data {data}: {len(missing)} of the {len(shards)} train shards the "
                                 f"manifest lists are missing ({shown})")


def check_seq_length(data: str | Path, manifest: dict, seq_length: int, allow_crop: bool) -> None:
    corpus = (manifest.get("parameters") or {}).get("seq_len")
    if not isinstance(corpus, int) or corpus == seq_length:
        return
    recut = f"data_prep/prepare.py --from-store --out {data} --seq-len {seq_length}"
    if seq_length > corpus:
        raise TrainingInputError(
            f"--seq-length {seq_length} is longer than the corpus's chunks (seq_len {corpus} in "
            f"{Path(data) / MANIFEST_NAME}): {seq_length - corpus} of every {seq_length} positions would be "
            f"padding; give --seq-length {corpus}, or re-cut the corpus: {recut}")
    if not allow_crop:
        raise TrainingInputError(
            f"--seq-length {seq_length} is shorter than the corpus's chunks (seq_len {corpus} in "
            f"{Path(data) / MANIFEST_NAME}): {corpus - seq_length} of every {corpus} bases would be dropped; "
            f"give --seq-length {corpus}, re-cut the corpus ({recut}), or pass {CROP_FLAG} to crop on "
            "purpose")


def check_species_weights(data: str | Path, value: str) -> None:
    try:
        resolve_species_weights(value, train_samples_by_species(split_shards(data, "train")))
    except SpeciesWeightsError as e:
        raise TrainingInputError(str(e)) from None


def complete_steps(load: Path) -> list[str]:
    """The checkpoint tags in `load` that finished writing, oldest first."""
    tags = [p for p in load.iterdir() if STEP_DIR.fullmatch(p.name) and (p / COMPLETE_MARKER).is_file()]
    return [p.name for p in sorted(tags, key=lambda p: int(STEP_DIR.fullmatch(p.name).group(1)))]


def check_load_dir(load: str | Path, weights_only: bool = False) -> None:
    """If --load's `latest` exists it must name a complete checkpoint whose every file is there and
    reads (the converter's own check; the optimizer partitions only when they will be loaded);
    check_run_history says when --load may have none."""
    load = Path(load)
    if not load.exists():
        return
    if not load.is_dir():
        raise TrainingInputError(f"--load {load}: is a file, not a checkpoint directory")
    tag = published_tag(load)
    if tag is None:
        return
    latest = load / "latest"
    if not (load / tag).is_dir():
        what = "does not exist"
    elif not (load / tag / COMPLETE_MARKER).is_file():
        what = f"is incomplete (no {COMPLETE_MARKER} marker)"
    else:
        damage = damaged_file(load, tag, weights_only or (load / tag / WEIGHTS_ONLY_MARKER).is_file())
        if damage is None:
            return
        what = f"is damaged ({damage})"
    steps = [step for step in complete_steps(load) if step != tag]
    have = (f"other complete checkpoints here: {', '.join(steps)}" if steps
            else "no other complete checkpoint is here")
    hint = f" (write one of them into {latest} to resume from it)" if steps else ""
    raise TrainingInputError(f"--load {load}: {latest.name} names {tag!r}, which {what}; {have}{hint}")


def damaged_file(load: Path, tag: str, weights_only: bool) -> str | None:
    """Why one of the checkpoint's files cannot be loaded (missing, truncated, not DeepSpeed's), or None."""
    from megamerge.checkpoint_conversion import ConversionError
    from megamerge.checkpoint_conversion.discovery import find_checkpoint
    from megamerge.checkpoint_conversion.safe_load import load_deepspeed_file

    try:
        files = find_checkpoint(load, tag, with_optimizer=not weights_only)
        for path in (*files.model_states.values(), *files.optim_states.values()):
            load_deepspeed_file(path)
    except ConversionError as e:
        return str(e)
    return None


START_OVER_FLAG = "--start-over"


def published_tag(directory: Path) -> str | None:
    """The tag `directory/latest` names, or None when there is none (no file, no directory)."""
    latest = directory / "latest"
    return latest.read_text().strip() if latest.is_file() else None


def earlier_run(save: Path) -> str | None:
    """What of an earlier training run `save` holds (its published checkpoint, complete steps, or logged
    metrics), said in a few words; None when a run starting there rewinds nothing."""
    if not save.is_dir():
        return None
    tag = published_tag(save)
    if tag is not None:
        return f"the checkpoint {tag} (its `latest`)"
    steps = complete_steps(save)
    if steps:
        return f"complete checkpoints ({', '.join(steps)})"
    metrics = save / "metrics.jsonl"
    if metrics.is_file() and metrics.stat().st_size:
        return f"{metrics.name} of an earlier run"
    return None


def check_run_history(args: argparse.Namespace) -> None:
    """A run never rewinds another's history: a --load without a checkpoint is refused unless it is
    --save itself (a first attempt that will save there, as slurm/ passes on every attempt), and a run
    that does not resume --save's own checkpoint is refused when --save holds an earlier run, unless
    --start-over moves that run aside."""
    save, load = getattr(args, "save", None), getattr(args, "load", None)
    resumes_save = bool(save and load) and Path(save).resolve() == Path(load).resolve()
    start_over = getattr(args, "start_over", False)
    if start_over and resumes_save:
        raise TrainingInputError(f"{START_OVER_FLAG} with --load {load} equal to --save: moving the run "
                                 "aside leaves nothing to resume; drop --load to start over, or drop "
                                 f"{START_OVER_FLAG} to resume")
    if load and not resumes_save and published_tag(Path(load)) is None:
        what = "no such directory" if not Path(load).exists() else "holds no checkpoint (no `latest`)"
        raise TrainingInputError(f"--load {load}: {what}; to start a new run leave --load out (--load equal "
                                 "to --save is the first-attempt form that resumes once a checkpoint exists)")
    if not save or (resumes_save and not getattr(args, "finetune", False)):
        return
    earlier = earlier_run(Path(save))
    if earlier is None or start_over:
        return
    start = f"--finetune from --load {load}" if getattr(args, "finetune", False) else \
        (f"from --load {load}" if load else "from scratch")
    raise TrainingInputError(f"--save {save} holds {earlier}; starting {start} there would rewind it. "
                             f"Resume it with --load {save}, give a new --save, or pass {START_OVER_FLAG} "
                             f"to move it aside to {save}.before-<UTC time> first")


def move_earlier_run_aside(save: str | Path) -> Path | None:
    """--start-over: rename --save (when it holds an earlier run) to a fresh sibling; returns it."""
    return None if earlier_run(Path(save)) is None else move_aside(Path(save))


def move_aside(path: Path) -> Path:
    """Rename `path` to the fresh sibling `<name>.before-<UTC time>`, and return that."""
    aside = path.with_name(f"{path.name}.before-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}")
    while aside.exists():  # two moves within a second
        aside = aside.with_name(aside.name + "+")
    path.rename(aside)
    return aside


def check_training_inputs(args: argparse.Namespace) -> None:
    """Every check above, from train.py's parsed flags (`allow_seq_length_crop` may be absent)."""
    check_batch_flags(args)
    if getattr(args, "data", None) is not None and not getattr(args, "mock_data", False):
        manifest = read_corpus_manifest(args.data)
        check_train_shards(args.data, manifest)
        check_seq_length(args.data, manifest, args.seq_length, getattr(args, "allow_seq_length_crop", False))
        if getattr(args, "species_weights", None) is not None:
            check_species_weights(args.data, args.species_weights)
    check_run_history(args)
    if getattr(args, "load", None):
        check_load_dir(args.load, weights_only=getattr(args, "finetune", False))


def _launch_rank() -> int:
    """This process's global rank as the launcher set it (torch.distributed is not up yet)."""
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")))


# How long a rank other than 0 waits to be stopped by its launcher (torchrun, srun --kill-on-bad-exit)
# after rank 0 reported the same refusal. Exiting at once let torchrun kill rank 0 before it had printed
# (a CI run lost the line); a rank still alive after this saw a refusal rank 0 did not (a node-local
# path), so reports it.
OTHER_RANKS_WAIT_FOR_RANK0_S = 30.0


def refuse_bad_training_inputs(args: argparse.Namespace, program: str = "train.py") -> None:
    """Run `check_training_inputs`; a failure is `refuse_once`'s one line and exit 2."""
    try:
        check_training_inputs(args)
    except TrainingInputError as e:
        refuse_once(program, str(e))


def report_once(program: str, message: str, before: str = "") -> None:
    """`program: error: message` from rank 0 only (after `before`, e.g. a usage line): every rank
    reaches the same refusal, and one line is what the user should read. Other ranks wait for the
    launcher to stop them, and print their own line (naming the rank) only if it does not."""
    rank = _launch_rank()
    if rank == 0:
        print(f"{before}{program}: error: {message}", file=sys.stderr, flush=True)
    else:
        time.sleep(OTHER_RANKS_WAIT_FOR_RANK0_S)
        print(f"{program}: error (rank {rank}): {message}", file=sys.stderr, flush=True)


def warn_once(program: str, message: str) -> None:
    """`program: warning: message` from rank 0 only (every rank parses the same flags)."""
    if _launch_rank() == 0:
        print(f"{program}: warning: {message}", file=sys.stderr, flush=True)


def refuse_once(program: str, message: str, before: str = "") -> typing.NoReturn:
    """`report_once`, then exit 2."""
    report_once(program, message, before)
    raise SystemExit(2)
