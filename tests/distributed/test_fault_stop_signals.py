"""A stop signal sent to every process of one rank (as a scheduler signalling a whole job step
does), and the corrupt-shard counter across ranks and workers (issue 19, rows 2 and 9).

One real run: 2 DeepSpeed ranks x 2 DataLoader workers each over a prepared corpus with 4 shards
truncated, then SIGTERM to rank 1 and both of its workers. The workers leave the signal to their
rank, which saves a checkpoint and exits 0 with exit_status.json (before the fix: "DataLoader
worker ... is killed by signal: Terminated", exit 1, no checkpoint); metrics.jsonl counts the 4
truncated shards once each, summed over both ranks and their 4 workers (before: 1, rank 0's own)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from tests.helpers import CPU_CONFIG, describe, read_metrics, subprocess_env, train_command

TRUNCATED = 4


@pytest.fixture(scope="module")
def damaged_corpus(synthetic_corpus, tmp_path_factory) -> tuple[Path, int]:
    """The shared synthetic corpus with 4 of its train shards cut short; (corpus, train shards)."""
    corpus = tmp_path_factory.mktemp("damaged") / "c"
    shutil.copytree(synthetic_corpus, corpus)
    manifest = json.loads((corpus / "manifest.json").read_text())
    train = [corpus / s["path"] for s in manifest["shards"] if s["split"] == "train"]
    for shard in train[1::3][:TRUNCATED]:
        shard.write_bytes(shard.read_bytes()[:5000])
    return corpus, len(train)


def local_rank_flag(process: psutil.Process) -> str | None:
    return next((a for a in process.cmdline() if a.startswith("--local_rank")), None)


def rank_processes(launcher: psutil.Process) -> dict[int, psutil.Process]:
    """local rank -> its process: the launcher's descendants that carry --local_rank, less their
    forked DataLoader workers (which carry the same command line)."""
    ranks = {}
    for child in launcher.children(recursive=True):
        flag = local_rank_flag(child)
        if flag and not local_rank_flag(child.parent()):
            ranks[int(flag.split("=")[1])] = child
    return ranks


@pytest.fixture(scope="module")
def signalled_run(damaged_corpus, tmp_path_factory):
    corpus, _ = damaged_corpus
    cwd = tmp_path_factory.mktemp("signalled")
    args = ["--ds_config", str(CPU_CONFIG), "--model", "tiny", "--data", str(corpus), "--seq-length", "512",
            "--micro-batch-size", "2", "--global-batch-size", "8", "--num-workers", "2", "--lr", "1e-3",
            "--lr-warmup-iters", "2", "--log-interval", "1", "--train-iters", "1000",
            "--save-interval", "1000", "--eval-interval", "1000", "--save", "ck"]
    proc = subprocess.Popen(train_command(2, args), cwd=cwd, env=subprocess_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    metrics, deadline = cwd / "ck" / "metrics.jsonl", time.monotonic() + 400
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 2):
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "no training progress within 400 s"
        time.sleep(0.2)
    rank1 = rank_processes(psutil.Process(proc.pid))[1]
    workers = rank1.children()  # its DataLoader workers
    for process in (rank1, *workers):
        process.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, output, ""), cwd / "ck", len(workers)


def test_sigterm_to_a_rank_and_its_workers_saves_and_exits_zero(signalled_run):
    proc, save, signalled_workers = signalled_run
    assert signalled_workers == 2, describe(proc)
    assert proc.returncode == 0, describe(proc)
    assert "killed by signal" not in proc.stdout and "Traceback" not in proc.stdout, describe(proc)
    status = json.loads((save / "exit_status.json").read_text())
    # rank 0, which writes the status, was not signalled itself: it stopped on rank 1's word
    assert status["reason"] == "signal on another rank" and status["finished"] is False, status
    assert (save / "latest").read_text() == f"global_step{status['iteration']}"
    assert (save / f"global_step{status['iteration']}" / "megamerge_complete").is_file()
    assert f"saved checkpoint ck/global_step{status['iteration']} (signal on another rank)" in proc.stdout


def test_corrupt_shard_counter_sums_over_ranks_and_workers(signalled_run, damaged_corpus):
    proc, save, _ = signalled_run
    _, train_shards = damaged_corpus
    assert train_shards >= 2 * 2 * 4, "every worker should have shards of its own"
    records = read_metrics(save)
    # The corpus is small enough for each worker's shuffle buffer to read all of its shards before
    # its first batch, so the count is complete from the first iteration on (rank 0 logs it).
    assert {r["corrupt_shards"] for r in records.values()} == {TRUNCATED}, records
    assert proc.stdout.count("corrupt shard") == TRUNCATED, describe(proc)
