"""No command that pre-trains deletes a run the user already has: the benchmarks, given an output
that holds one, stop before preparing or training anything, name it, and leave it as it was;
`make demo` renames the earlier run (tools/demo.py) and starts a new one."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from benchmarks import pretrain_real_genomes, tokenizer_long_run
from megamerge.training.input_checks import move_aside


def _earlier_run(ckpt: Path) -> Path:
    ckpt.mkdir(parents=True)
    (ckpt / "latest").write_text("global_step100")
    return ckpt / "latest"


def test_pretrain_real_genomes_keeps_an_earlier_run(tmp_path: Path):
    kept = _earlier_run(tmp_path / "run" / "checkpoints")
    (tmp_path / "genomes").mkdir()
    with pytest.raises(SystemExit, match="holds an earlier run; give a new --out"):
        pretrain_real_genomes.main(["--genomes", str(tmp_path / "genomes"), "--out", str(tmp_path / "run"),
                                    "--no-write"])
    assert kept.read_text() == "global_step100"
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoints"]  # no corpus started


def test_tokenizer_long_run_keeps_an_earlier_run(tmp_path: Path):
    kept = _earlier_run(tmp_path / "checkpoints")
    with pytest.raises(SystemExit, match="holds an earlier run; analyze it with --analyze"):
        tokenizer_long_run.train(argparse.Namespace(run=tmp_path, schedule_iters=10, train_minutes=5))
    assert kept.read_text() == "global_step100"
    assert not (tmp_path / "corpus").exists()


def test_an_empty_checkpoint_directory_is_no_run(tmp_path: Path):
    (tmp_path / "checkpoints").mkdir()
    assert not pretrain_real_genomes.holds_earlier_run(tmp_path / "checkpoints")
    assert not pretrain_real_genomes.holds_earlier_run(tmp_path / "absent")


def test_the_demo_renames_an_earlier_run_as_start_over_does(tmp_path: Path):
    """tools/demo.py moves an earlier run's checkpoints and tensorboard aside with train.py
    --start-over's rule, so two runs within a second keep two places."""
    names = []
    for latest in ("global_step100", "global_step300"):
        _earlier_run(tmp_path / "checkpoints").write_text(latest)
        names.append(move_aside(tmp_path / "checkpoints").name)
    assert not (tmp_path / "checkpoints").exists()
    assert names[0].startswith("checkpoints.before-") and names[1] != names[0]
    assert [(tmp_path / n / "latest").read_text() for n in names] == ["global_step100", "global_step300"]
