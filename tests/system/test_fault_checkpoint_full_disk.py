"""The disk fills while train.py writes a checkpoint (issue 19, row 7), on a real 48 MiB file system
(a tmpfs mounted for the test: needs root, as the SLURM tests do). Two DeepSpeed ranks; a tiny
model's checkpoint is ~32 MiB, so global_step2 fits and global_step4 cannot.

Before: "basic_ios::clear: iostream error", no word of disk space, the partial global_step4 left
filling the disk. Now: the error says the disk is full and where, the partial step directory is
gone, `latest` names the last complete checkpoint, and the run exits non-zero (a scheduler must not
requeue into the same full disk)."""

from __future__ import annotations

import pytest

from tests.helpers import TINY_ARGS, describe, run_train, small_tmpfs


@pytest.fixture
def small_disk(tmp_path):
    with small_tmpfs(tmp_path / "disk", "48m") as mount:
        yield mount


def test_disk_full_during_a_save_names_it_removes_the_partial_step_and_exits_non_zero(small_disk, tmp_path):
    save = small_disk / "ck"
    proc = run_train(2, [*TINY_ARGS, "--micro-batch-size", "2", "--global-batch-size", "4",
                         "--train-iters", "6", "--save-interval", "2", "--eval-interval", "100",
                         "--save", str(save)], tmp_path)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, describe(proc)
    assert (f"cannot write checkpoint {save / 'global_step4'}: no space left on the device" in output
            ), describe(proc)
    assert (f"removed the partial global_step4; {save / 'latest'} still names global_step2" in output
            ), describe(proc)
    assert (save / "latest").read_text() == "global_step2"
    assert (save / "global_step2" / "megamerge_complete").is_file()
    assert not (save / "global_step4").exists(), sorted(p.name for p in save.iterdir())
    assert not (save / "exit_status.json").exists()  # no "stopped cleanly" for a launcher to requeue on
    print("\n".join(line for line in output.splitlines() if "train.py: error" in line))
