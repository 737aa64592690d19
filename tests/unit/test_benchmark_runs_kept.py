"""The pre-training benchmarks never delete a run the user already has: given an output that holds
one, they stop before preparing or training anything, name it, and leave it as it was."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from benchmarks import pretrain_real_genomes, tokenizer_long_run


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
