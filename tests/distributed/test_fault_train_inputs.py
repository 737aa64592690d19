"""train.py refuses bad training inputs before DeepSpeed starts (issue 19, rows 3 and 8), end to end:
the real entry point, as a plain process and as 2 torchrun ranks. The checks themselves are unit
tested in tests/unit/test_fault_training_inputs.py; here: they are wired in, one line comes from one
rank, the exit status is 2, and it is quick (no process group, no deepspeed.initialize)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.helpers import REPO, TORCHRUN, TRAIN, free_port, read_metrics, subprocess_env
from tests.unit.test_fault_prepare import tree

CHECKED_BEFORE_STARTUP_S = 60  # imports only; DeepSpeed's start-up alone took ~100 s in the issue


def train(args: list[str], cwd,
          launcher: list[str] | None = None) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    proc = subprocess.run([*(launcher or [sys.executable]), str(TRAIN), "--model", "tiny",
                           "--micro-batch-size", "2", "--num-workers", "0", "--train-iters", "2", *args],
                          cwd=cwd, env=subprocess_env(), capture_output=True, text=True, timeout=300,
                          check=False)
    return proc, time.monotonic() - t0


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (proc.stdout + proc.stderr).splitlines() if "error" in line.lower()]


def test_seq_length_other_than_the_corpus_is_refused_naming_both(synthetic_corpus, tmp_path):
    proc, seconds = train(["--data", str(synthetic_corpus), "--seq-length", "1024", "--save", "ck"], tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert error_lines(proc) == [
        ("megamerge/train.py: error: --seq-length 1024 is longer than the corpus's chunks (seq_len 512 in "
         f"{synthetic_corpus / 'manifest.json'}): 512 of every 1024 positions would be padding; give "
         "--seq-length 512, or re-cut the corpus: data_prep/prepare.py --from-store --out "
         f"{synthetic_corpus} --seq-len 1024")]
    assert "Traceback" not in proc.stderr and seconds < CHECKED_BEFORE_STARTUP_S, (seconds, proc.stderr)
    assert not (tmp_path / "ck").exists()  # nothing started, nothing written

    shorter, _ = train(["--data", str(synthetic_corpus), "--seq-length", "256"], tmp_path)
    assert shorter.returncode == 2
    assert "--seq-length 256 is shorter than the corpus's chunks (seq_len 512" in shorter.stderr
    assert "--allow-seq-length-crop" in shorter.stderr


def train_one_process(args: list[str], cwd) -> subprocess.CompletedProcess:
    """train.py as a plain single process that does train (a launcher's rank variables set)."""
    return subprocess.run([sys.executable, str(TRAIN), "--ds_config", str(REPO / "ds_configs" / "cpu.json"),
                           "--model", "tiny", "--micro-batch-size", "2", "--global-batch-size", "2",
                           "--num-workers", "0", "--eval-interval", "100", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=600, check=False,
                          env=subprocess_env(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1",
                                             MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port())))


def test_deliberate_crop_trains(synthetic_corpus, tmp_path):
    proc = train_one_process(["--data", str(synthetic_corpus), "--seq-length", "256",
                              "--allow-seq-length-crop", "--train-iters", "2", "--save", "ck"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "ck" / "latest").read_text() == "global_step2"


def test_a_run_never_rewinds_the_save_directory(tmp_path):
    """Issue 25, item 1, as the issue reproduced it: a mistyped --load (or none) into a --save that
    holds global_step3 is refused in one line, and ck is left byte for byte; --start-over moves the
    earlier run aside whole and starts afresh. Then item 2 on the run moved aside."""
    mock = ["--mock-data", "--seq-length", "128", "--save-interval", "1"]
    first = train_one_process([*mock, "--train-iters", "3", "--save", "ck"], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    before = tree(tmp_path / "ck")
    for load in (["--load", "ck_typo"], []):
        proc = train_one_process([*mock, "--train-iters", "2", "--save", "ck", *load], tmp_path)
        assert proc.returncode == 2, proc.stderr[-3000:]
        (line,) = error_lines(proc)
        assert line.startswith("megamerge/train.py: error: ") and "Traceback" not in proc.stderr, proc.stderr
        assert ("ck_typo: no such directory" if load
                else "--save ck holds the checkpoint global_step3") in proc.stderr
        assert tree(tmp_path / "ck") == before

    over = train_one_process([*mock, "--train-iters", "1", "--save", "ck", "--start-over"], tmp_path)
    assert over.returncode == 0, over.stderr[-3000:]
    (aside,) = tmp_path.glob("ck.before-*")
    assert tree(aside) == before
    assert (tmp_path / "ck" / "latest").read_text() == "global_step1"
    assert sorted(read_metrics(tmp_path / "ck")) == [1]

    # Issue 25, item 2: a damaged step of a real checkpoint is one line naming the file, not two tracebacks.
    damaged = aside / "global_step3" / "mp_rank_00_model_states.pt"
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    resume = train_one_process([*mock, "--train-iters", "4", "--save", str(aside), "--load", str(aside)],
                               tmp_path)
    assert resume.returncode == 2, resume.stderr[-3000:]
    (line,) = error_lines(resume)
    assert f"which is damaged ({damaged}: truncated or corrupt checkpoint file" in line, resume.stderr
    assert ("other complete checkpoints here: global_step1, global_step2" in line
            and "Traceback" not in resume.stderr)


def test_missing_data_is_one_line_from_one_of_two_ranks(tmp_path):
    missing = tmp_path / "no_corpus"
    single, seconds = train(["--data", str(missing)], tmp_path)
    expected = [(f"megamerge/train.py: error: --data {missing}: no such directory; prepare a corpus with "
                f"data_prep/prepare.py --out {missing}")]
    assert single.returncode == 2 and error_lines(single) == expected, single.stderr
    assert "Traceback" not in single.stderr and seconds < CHECKED_BEFORE_STARTUP_S, (seconds, single.stderr)

    launcher = [str(TORCHRUN), "--nproc-per-node", "2", "--master-port", str(free_port())]
    ranks, _ = train(["--data", str(missing)], tmp_path, launcher)
    assert ranks.returncode != 0
    assert [line for line in error_lines(ranks) if "train.py: error:" in line] == expected, ranks.stderr
    # torchrun then reports the failed children itself; neither rank printed a traceback of its own
    assert "refuse_bad_training_inputs" not in ranks.stderr and "trainer.py" not in ranks.stderr, ranks.stderr


@pytest.mark.parametrize(("flags", "expected"), [
    (["--mock-data", "--hidden-size", "130"],
     "error: --hidden-size 130 (--model tiny): invalid MergeDNAConfig: n_heads=4 must divide dim=130"),
    (["--mock-data", "--hidden-size", "-128"],
     "error: --hidden-size -128 (--model tiny): invalid MergeDNAConfig: dim=-128 must be >= 1"),
    (["--mock-data", "--model", "nope"], "error: argument --model: invalid choice: 'nope'"),
    (["--mock-data", "--global-batch-size", "3"],
     "global batch 3 is not divisible by micro-batch 2 x data-parallel size 2"),
], ids=["indivisible", "negative", "invalid_choice", "global_batch"])
def test_a_refused_flag_is_one_line_from_one_of_two_ranks(tmp_path, flags, expected):
    """Issue 25, item 5: one line naming the flag and the rule, from rank 0, no traceback."""
    launcher = [str(TORCHRUN), "--nproc-per-node", "2", "--master-port", str(free_port())]
    proc, _ = train(["--ds_config", str(REPO / "ds_configs" / "cpu.json"), *flags], tmp_path, launcher)
    assert proc.returncode != 0
    lines = [line for line in error_lines(proc) if "train.py: error" in line]
    assert len(lines) == 1 and expected in lines[0], proc.stderr[-3000:]
    # torchrun reports the failed child with a traceback of its own; no rank printed one of megamerge's
    assert f'File "{REPO / "megamerge"}' not in proc.stderr, proc.stderr
