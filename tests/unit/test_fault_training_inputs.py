"""The checks train.py runs before DeepSpeed starts (issue 19, rows 3 and 8): each bad --data,
--seq-length, --load or batch flag is one line naming the flag and the path (and both lengths, or
the steps that exist), from rank 0 only; nothing on disk is changed."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest
import torch

from megamerge.training import input_checks
from megamerge.training.checkpointing import COMPLETE_MARKER
from megamerge.training.input_checks import (
    TrainingInputError,
    check_training_inputs,
    refuse_bad_training_inputs,
)
from tests.unit.test_fault_prepare import tree


def flags(**overrides) -> argparse.Namespace:
    values = {"data": None, "mock_data": False, "seq_length": 512, "micro_batch_size": 2,
              "global_batch_size": None, "load": None, "allow_seq_length_crop": False, "save": None,
              "finetune": False, "start_over": False}
    return argparse.Namespace(**{**values, **overrides})


def refused(**overrides) -> str:
    with pytest.raises(TrainingInputError) as caught:
        check_training_inputs(flags(**overrides))
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_a_good_corpus_passes(synthetic_corpus):
    check_training_inputs(flags(data=str(synthetic_corpus)))
    check_training_inputs(flags(data=str(synthetic_corpus), seq_length=256, allow_seq_length_crop=True))
    check_training_inputs(flags(mock_data=True, seq_length=100))


def test_data_missing_empty_or_not_a_corpus(tmp_path):
    nope = tmp_path / "nope"
    assert refused(data=str(nope)) == (f"--data {nope}: no such directory; prepare a corpus with "
                                       f"data_prep/prepare.py --out {nope}")
    (tmp_path / "empty").mkdir()
    assert "empty directory" in refused(data=str(tmp_path / "empty"))
    (tmp_path / "genomes").mkdir()
    (tmp_path / "genomes" / "a.fa").write_text(">a\nACGT\n")
    message = refused(data=str(tmp_path / "genomes"))
    assert f"--data {tmp_path / 'genomes'}: no manifest.json (it holds a.fa)" in message
    (tmp_path / "a_file").write_text("x")
    assert "is a file, not a corpus directory" in refused(data=str(tmp_path / "a_file"))
    (tmp_path / "genomes" / "manifest.json").write_text("{broken")
    assert "manifest.json cannot be read" in refused(data=str(tmp_path / "genomes"))
    (tmp_path / "genomes" / "manifest.json").write_text(json.dumps({"format": "other"}))
    assert "is not a megamerge shard manifest" in refused(data=str(tmp_path / "genomes"))


def test_corpus_without_train_shards_or_with_missing_ones(synthetic_corpus, tmp_path):
    corpus = tmp_path / "c"
    shutil.copytree(synthetic_corpus, corpus)
    manifest = json.loads((corpus / "manifest.json").read_text())
    train = [s["path"] for s in manifest["shards"] if s["split"] == "train"]
    (corpus / train[1]).unlink()
    message = refused(data=str(corpus))
    assert f"1 of the {len(train)} train shards the manifest lists are missing ({train[1]})" in message
    manifest["shards"] = [s for s in manifest["shards"] if s["split"] != "train"]
    (corpus / "manifest.json").write_text(json.dumps(manifest))
    assert f"--data {corpus}: the manifest lists no train shards" in refused(data=str(corpus))


def test_seq_length_must_match_the_corpus(synthetic_corpus):
    before = tree(synthetic_corpus)
    longer = refused(data=str(synthetic_corpus), seq_length=1024)
    assert longer.startswith("--seq-length 1024 is longer than the corpus's chunks (seq_len 512 in ")
    assert "512 of every 1024 positions would be padding" in longer
    assert "padding" in refused(data=str(synthetic_corpus), seq_length=1024, allow_seq_length_crop=True)
    shorter = refused(data=str(synthetic_corpus), seq_length=256)
    assert "--seq-length 256 is shorter than the corpus's chunks (seq_len 512" in shorter
    assert "--allow-seq-length-crop" in shorter and "--seq-len 256" in shorter  # both ways out are named
    assert tree(synthetic_corpus) == before


def test_load_whose_latest_names_a_missing_step_lists_the_steps_that_exist(tmp_path):
    load = tmp_path / "ckpt"
    first_attempt = {"mock_data": True, "load": str(load), "save": str(load)}
    check_training_inputs(flags(**first_attempt))  # absent: a first attempt that will save there
    load.mkdir()
    check_training_inputs(flags(**first_attempt))  # no `latest` yet
    for step in (100, 20, 300):
        complete_step(load, step)
    (load / "global_step400").mkdir()  # torn: no marker
    (load / "latest").write_text("global_step500")
    message = refused(mock_data=True, load=str(load))
    assert message == (f"--load {load}: latest names 'global_step500', which does not exist; other complete "
                       "checkpoints here: global_step20, global_step100, global_step300 (write one of them "
                       f"into {load / 'latest'} to resume from it)")
    (load / "latest").write_text("global_step400\n")
    assert "'global_step400', which is incomplete (no megamerge_complete marker)" in refused(mock_data=True,
                                                                                          load=str(load))
    (load / "latest").write_text("global_step300\n")
    check_training_inputs(flags(mock_data=True, load=str(load)))
    check_training_inputs(flags(**first_attempt))


@pytest.mark.parametrize("flag", ["micro_batch_size", "global_batch_size"])
def test_batch_sizes_below_one(flag):
    assert refused(mock_data=True, **{flag: 0}) == f"--{flag.replace('_', '-')} 0: must be at least 1"


@pytest.mark.parametrize(("rank", "prefix"),
                         [("0", "train.py: error: "), ("1", "train.py: error (rank 1): ")])
def test_refusal_is_one_line_and_exit_2_other_ranks_only_after_the_wait(tmp_path, capsys, monkeypatch, rank,
                                                                         prefix):
    monkeypatch.setenv("RANK", rank)
    waits = []
    monkeypatch.setattr(input_checks.time, "sleep", waits.append)
    with pytest.raises(SystemExit) as caught:
        refuse_bad_training_inputs(flags(data=str(tmp_path / "nope")))
    assert caught.value.code == 2
    nope = tmp_path / "nope"
    assert capsys.readouterr().err == (f"{prefix}--data {nope}: no such directory; prepare a corpus with "
                                       f"data_prep/prepare.py --out {nope}\n")
    # rank 0 reports at once; another rank first gives its launcher time to stop it after rank 0's exit
    assert waits == ([] if rank == "0" else [input_checks.OTHER_RANKS_WAIT_FOR_RANK0_S])


def test_srun_rank_is_honoured_before_torch_distributed_is_up(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setattr(input_checks.time, "sleep", lambda seconds: None)
    with pytest.raises(SystemExit):
        refuse_bad_training_inputs(flags(micro_batch_size=0))
    assert capsys.readouterr().err.startswith("train.py: error (rank 3): ")
    assert Path(tmp_path).exists()


def complete_step(load: Path, step: int) -> Path:
    """A checkpoint step as the loader checks it: the marker, and a model-states and an optimizer
    file that torch reads (the client state of a 1-rank layout, no tensors)."""
    directory = load / f"global_step{step}"
    directory.mkdir(parents=True)
    torch.save({"layout": {"tp": 1, "pp": 1, "dp": 1}, "model_config": {}},
               directory / "mp_rank_00_model_states.pt")
    torch.save({"optimizer_state_dict": {}}, directory / "zero_pp_rank_0_mp_rank_00_optim_states.pt")
    (directory / COMPLETE_MARKER).write_text("{}\n")
    return directory


def saved_run(save: Path, steps=(1, 2, 3)) -> Path:
    """A --save directory as train.py leaves it: complete steps, `latest`, metrics."""
    save.mkdir()
    for step in steps:
        complete_step(save, step)
    (save / "latest").write_text(f"global_step{steps[-1]}")
    (save / "metrics.jsonl").write_text("".join(f'{{"iteration": {i}}}\n' for i in steps))
    return save


def test_a_load_without_a_checkpoint_is_refused_unless_it_is_the_save_directory(tmp_path):
    """Issue 25, item 1: a mistyped --load no longer starts from scratch; the first-attempt form
    (--load = --save, as slurm/ passes) still does."""
    typo = tmp_path / "ck_typo"
    assert refused(mock_data=True, load=str(typo), save=str(tmp_path / "new")) == (
        f"--load {typo}: no such directory; to start a new run leave --load out (--load equal to --save is "
        "the first-attempt form that resumes once a checkpoint exists)")
    typo.mkdir()
    assert refused(mock_data=True, load=str(typo)).startswith(
        f"--load {typo}: holds no checkpoint (no `latest`)")
    check_training_inputs(flags(mock_data=True, load=str(typo), save=str(typo)))
    check_training_inputs(flags(mock_data=True, load=str(typo) + "/", save=str(typo)))  # the same directory


@pytest.mark.parametrize("how", ["scratch", "other_load", "finetune_onto_itself"])
def test_a_run_that_would_rewind_the_save_directory_is_refused(tmp_path, how):
    """Issue 25, item 1: starting anything but a resume of --save's own run into a --save that holds
    one is refused, naming what it holds; nothing on disk changes."""
    ck = saved_run(tmp_path / "ck")
    other = saved_run(tmp_path / "other", steps=(5,))
    load = {"scratch": None, "other_load": str(other), "finetune_onto_itself": str(ck)}[how]
    before = tree(ck)
    message = refused(mock_data=True, save=str(ck), load=load, finetune=how == "finetune_onto_itself")
    assert message.startswith(f"--save {ck} holds the checkpoint global_step3 (its `latest`); starting ")
    assert "would rewind it" in message and f"--load {ck}" in message and "--start-over" in message
    assert tree(ck) == before
    check_training_inputs(flags(mock_data=True, save=str(ck), load=str(ck)))  # the resume
    if how != "finetune_onto_itself":  # that one has nothing left to load once moved (a new --save does)
        check_training_inputs(flags(mock_data=True, save=str(ck), load=load, start_over=True))


def test_metrics_alone_are_an_earlier_run_and_an_empty_save_is_not(tmp_path):
    save = tmp_path / "run"
    save.mkdir()
    check_training_inputs(flags(mock_data=True, save=str(save)))
    (save / "metrics.jsonl").write_text('{"iteration": 1}\n')
    assert refused(mock_data=True, save=str(save)).startswith(
        f"--save {save} holds metrics.jsonl of an earlier run")
    assert input_checks.earlier_run(tmp_path / "absent") is None


def test_start_over_moves_the_earlier_run_aside_whole(tmp_path):
    ck = saved_run(tmp_path / "ck")
    before = tree(ck)
    aside = input_checks.move_earlier_run_aside(ck)
    assert aside.parent == tmp_path and aside.name.startswith("ck.before-") and not ck.exists()
    assert tree(aside) == before
    saved_run(ck)
    assert input_checks.move_earlier_run_aside(ck) not in (None, aside)  # a second one keeps the first
    assert tree(aside) == before
    assert input_checks.move_earlier_run_aside(tmp_path / "absent") is None
    assert "drop --load to start over" in refused(mock_data=True, save=str(ck), load=str(ck), start_over=True)


def test_a_damaged_step_is_named_with_the_other_complete_steps(tmp_path):
    """Issue 25, item 2: the converter's file check, before DeepSpeed loads anything: a truncated
    model-states file or a missing optimizer partition is one line naming the file; the optimizer
    files are not needed (nor checked) when --finetune loads weights only."""
    ck = saved_run(tmp_path / "ck")
    step3 = ck / "global_step3"
    optimizer = step3 / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    optimizer.unlink()
    message = refused(mock_data=True, load=str(ck), save=str(ck))
    assert message.startswith(f"--load {ck}: latest names 'global_step3', which is damaged ({step3}: missing "
                              f"checkpoint shard(s) {optimizer.name} (the checkpoint was written at TP=1 "
                              "PP=1 DP=1)); other complete checkpoints here: global_step1, global_step2 "
                              "(write one of them into ")
    check_training_inputs(flags(mock_data=True, load=str(ck), save=str(tmp_path / "new"), finetune=True))
    model_states = step3 / "mp_rank_00_model_states.pt"
    model_states.write_bytes(model_states.read_bytes()[:40])
    message = refused(mock_data=True, load=str(ck), save=str(tmp_path / "new"), finetune=True)
    assert f"which is damaged ({model_states}: truncated or corrupt checkpoint file (" in message


def test_a_run_stopped_in_the_loop_leaves_sigterm_to_end_a_waiting_rank(monkeypatch):
    """TrainingStopped comes after the Trainer's StopRequest took SIGTERM and SIGUSR1 (to save at the
    next iteration boundary); a rank then waiting in report_once must die of its launcher's SIGTERM,
    not sit out the wait (and the launcher's grace period) behind that handler."""
    import signal

    from megamerge import train
    from megamerge.training.signals import StopRequest
    from megamerge.training.trainer import TrainingStopped
    from tests.helpers import TINY_ARGS

    signals = (signal.SIGTERM, signal.SIGUSR1)
    during_run, during_report = {}, {}

    class StoppedTrainer:
        def __init__(self, args):
            self.stop = StopRequest()

        def run(self):
            during_run.update({sig: signal.getsignal(sig) for sig in signals})
            raise TrainingStopped("3 consecutive iterations had a non-finite loss or gradient")

    monkeypatch.setattr(train, "Trainer", StoppedTrainer)
    monkeypatch.setattr(train, "report_once",
                        lambda *args: during_report.update({sig: signal.getsignal(sig) for sig in signals}))
    before = {sig: signal.getsignal(sig) for sig in signals}
    try:
        assert train.main([*TINY_ARGS, "--train-iters", "1"]) == 2
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
    assert all(getattr(h, "__self__", None).__class__ is StopRequest for h in during_run.values())
    assert during_report == {sig: signal.SIG_DFL for sig in signals}
