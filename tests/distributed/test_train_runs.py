"""Real multi-process DeepSpeed runs on CPU (gloo): data-parallel equivalence, exact resume after
SIGKILL, crash-safe checkpoints, the NaN guard, signal handling and the logs."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import (
    REPO,
    TINY_ARGS,
    TRAIN,
    describe,
    free_port,
    read_metrics,
    run_train,
    subprocess_env,
    train_command,
)


@pytest.mark.layout_equivalence
def test_two_rank_zero2_matches_one_rank_with_the_same_global_batch(tmp_path):
    """Global batch 4: 1 rank x micro 2 x accumulation 2 against 2 ranks x micro 2 x accumulation 1.

    Gradient clipping is off here: DeepSpeed sums the squared gradient norm in a layout-dependent
    order, so the clip coefficient differs in the last ulp between the two layouts, and the hard
    merge ranking can amplify that after a few steps. Without it the runs agree bit for bit."""
    common = [*TINY_ARGS, "--micro-batch-size", "2", "--global-batch-size", "4", "--train-iters", "4",
              "--eval-interval", "100", "--tensorboard-dir", "tb", "--clip-grad", "0"]
    one = run_train(1, [*common, "--save", "one"], tmp_path)
    assert one.returncode == 0, describe(one)
    two = run_train(2, [*common, "--save", "two"], tmp_path)
    assert two.returncode == 0, describe(two)
    a, b = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    for it in a:
        for key in ("loss", "mtr", "latent_mtr", "amtm"):
            assert abs(a[it][key] - b[it][key]) <= 1e-5, (it, key, a[it][key], b[it][key])
        assert abs(a[it]["grad_norm"] - b[it]["grad_norm"]) <= 1e-4 * max(1.0, a[it]["grad_norm"])
    # the documented metrics fields, and TensorBoard event files
    fields = {"iteration", "consumed_samples", "loss", "mtr", "latent_mtr", "amtm", "lr", "grad_norm",
              "bases_per_token", "bases_per_second", "samples_per_second", "mfu", "skipped_iters"}
    assert fields <= set(b[4])
    assert b[4]["consumed_samples"] == 16 and b[4]["mfu"] is None  # no peak rate on CPU
    valid = read_metrics(tmp_path / "two", split="valid")
    assert {"masked_base_accuracy", "perplexity"} <= set(valid[4])
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


def _launch(args, cwd):
    return subprocess.Popen(train_command(2, args), cwd=cwd, env=subprocess_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _deepspeed_shm_buffers() -> set[str]:
    return {p.name for p in Path("/dev/shm").glob("deepspeed_allreduce_buffer_*")}


def test_sigkill_after_a_checkpoint_then_resume_reproduces_every_step(tmp_path):
    common = [*TINY_ARGS, "--micro-batch-size", "2", "--global-batch-size", "4", "--train-iters", "10",
              "--save-interval", "3", "--eval-interval", "100"]
    shm_before = _deepspeed_shm_buffers()
    reference = run_train(2, [*common, "--save", "ref"], tmp_path)
    assert reference.returncode == 0, describe(reference)

    killed = _launch([*common, "--save", "run", "--load", "run"], tmp_path)
    latest = tmp_path / "run" / "latest"
    deadline = time.time() + 300
    while not (latest.exists() and latest.read_text() == "global_step3"):
        assert killed.poll() is None, killed.stdout.read()
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait(timeout=60)
    stopped_at = max(read_metrics(tmp_path / "run"))
    assert stopped_at < 10, "the run finished before it could be killed"

    resumed = run_train(2, [*common, "--save", "run", "--load", "run"], tmp_path)
    assert resumed.returncode == 0, describe(resumed)
    assert "resumed from run/global_step3" in resumed.stderr + resumed.stdout
    ref, got = read_metrics(tmp_path / "ref"), read_metrics(tmp_path / "run")
    assert sorted(got) == list(range(1, 11))
    for it in range(1, 11):
        assert abs(ref[it]["loss"] - got[it]["loss"]) <= 1e-6, (it, ref[it]["loss"], got[it]["loss"])
        assert got[it]["consumed_samples"] == 4 * it
    # DeepSpeed's CPU all-reduce segments (66 MB of RAM each) must not outlive a run, killed or not.
    assert _deepspeed_shm_buffers() - shm_before == set()


def test_a_crash_while_writing_a_checkpoint_leaves_the_previous_one_loadable(tmp_path):
    env = subprocess_env(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                         MASTER_PORT=str(free_port()))
    proc = subprocess.run([sys.executable, "-m", "tests.distributed.workers.torn_checkpoint_save",
                           str(tmp_path / "ck")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0 and "OK" in proc.stdout, describe(proc)
    assert "simulated crash" in proc.stdout


@pytest.mark.parametrize("layout", ["dp2", "pp2"])
def test_nan_steps_are_skipped_and_counted_then_stop_the_run(tmp_path, layout):
    common = [*TINY_ARGS, "--micro-batch-size", "2", "--global-batch-size", "4", "--eval-interval", "100"]
    if layout == "pp2":  # the loss is made inside DeepSpeed's pipeline engine, on the last stage only
        common += ["--ds_config", str(REPO / "ds_configs" / "cpu_pp.json"),
                   "--pipeline-model-parallel-size", "2"]
    ok = run_train(2, [*common, "--train-iters", "4", "--inject-nan-at", "1", "--save", "a"], tmp_path)
    assert ok.returncode == 0, describe(ok)
    m = read_metrics(tmp_path / "a")
    assert m[1]["skipped_iters"] == 0 and m[2]["skipped_iters"] == 1 and m[4]["skipped_iters"] == 1
    assert m[2]["grad_norm"] is None and m[3]["grad_norm"] is not None
    # the merge scorers' norm is null with it (and always under pipeline stages)
    assert m[2]["merge_grad_norm"] is None and m[2]["merge_grad_norm_ratio"] is None
    assert (m[3]["merge_grad_norm"] is None) == (layout == "pp2")
    bad = run_train(2, [*common, "--train-iters", "6", "--inject-nan-at", "1", "2", "3",
                        "--max-skipped-iters", "3", "--save", "b"], tmp_path)
    assert bad.returncode != 0
    assert "3 consecutive iterations had a non-finite loss or gradient" in bad.stderr + bad.stdout


def test_sigusr1_on_one_rank_saves_and_exits_cleanly(tmp_path):
    args = [*TINY_ARGS, "--micro-batch-size", "2", "--global-batch-size", "4", "--train-iters", "1000",
            "--save-interval", "1000", "--eval-interval", "1000", "--save", "ck"]
    proc = _launch(args, tmp_path)
    metrics = tmp_path / "ck" / "metrics.jsonl"
    deadline = time.time() + 300
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 2):
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.1)
    import psutil

    # the rank processes, not deepspeed's launch.py parent (which also names train.py)
    ranks = [c for c in psutil.Process(proc.pid).children(recursive=True)
             if any(a.startswith("--local_rank") for a in c.cmdline())]
    assert len(ranks) == 2
    ranks[-1].send_signal(signal.SIGUSR1)  # SLURM signals ranks at slightly different times
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output
    status = json.loads((tmp_path / "ck" / "exit_status.json").read_text())
    assert status["finished"] is False and "signal" in status["reason"]
    assert (tmp_path / "ck" / "latest").read_text() == f"global_step{status['iteration']}"
    assert status["iteration"] < 1000


def test_exit_duration_ends_a_time_boxed_run_with_validation_and_a_checkpoint(tmp_path):
    # 0.05 min = 3 s from start-up: crossed within the first iterations, long before 1000.
    args = [*TINY_ARGS, "--micro-batch-size", "2", "--global-batch-size", "4", "--train-iters", "1000",
            "--save-interval", "1000", "--eval-interval", "1000", "--eval-iters", "1",
            "--exit-duration-in-mins", "0.05", "--save", "ck"]
    proc = run_train(2, args, tmp_path)
    assert proc.returncode == 0, describe(proc)
    status = json.loads((tmp_path / "ck" / "exit_status.json").read_text())
    assert status["finished"] is False and status["reason"] == "--exit-duration-in-mins 0.05", status
    stopped = status["iteration"]
    assert 1 <= stopped < 1000
    assert (tmp_path / "ck" / "latest").read_text() == f"global_step{stopped}"
    assert sorted(read_metrics(tmp_path / "ck", split="valid")) == [stopped]  # the final validation


def test_resuming_another_model_is_refused_before_deepspeed_loads_it(tmp_path):
    first = run_train(1, [*TINY_ARGS, "--train-iters", "1", "--global-batch-size", "2",
                          "--micro-batch-size", "2", "--save", "ck"], tmp_path)
    assert first.returncode == 0, describe(first)
    for flags, message in ((["--model", "carmania-tiny"],
                            "holds a mergedna model, but --model carmania-tiny"),
                           (["--ffn-hidden-size", "256"], "was trained with a different model config"),
                           (["--latent-merge-schedule", "single_layer"],
                            "was trained with a different model config")):
        proc = run_train(1, [*TINY_ARGS, "--train-iters", "2", "--global-batch-size", "2",
                             "--micro-batch-size", "2", "--load", "ck", *flags], tmp_path)
        assert proc.returncode == 2, describe(proc)
        assert f"checkpoint ck/global_step1 {message}" in proc.stderr, describe(proc)
        assert "Traceback" not in proc.stderr, describe(proc)
        if "different model config" in message:  # names every flag that selects a method option
            assert ("--latent-merge-schedule" in proc.stderr
                    and "--size-proportional-attention" in proc.stderr), describe(proc)


def test_torchrun_launch_takes_rank_from_the_environment(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
           str(free_port()), str(TRAIN), *TINY_ARGS, "--micro-batch-size", "2",
           "--global-batch-size", "4", "--train-iters", "2", "--eval-interval", "100", "--save", "ck"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, describe(proc)
    assert "dp 2" in proc.stderr  # two data-parallel ranks
    assert sorted(read_metrics(tmp_path / "ck")) == [1, 2]


def test_carmania_trains_through_the_same_entry_point_with_tensor_parallelism(tmp_path):
    args = [*TINY_ARGS, "--model", "carmania-tiny", "--micro-batch-size", "2", "--global-batch-size", "4",
            "--train-iters", "8", "--lr", "2e-3", "--eval-interval", "8", "--eval-iters", "2",
            "--tensor-model-parallel-size", "2", "--save", "ck"]
    proc = run_train(2, args, tmp_path)
    assert proc.returncode == 0, describe(proc)
    m = read_metrics(tmp_path / "ck")
    assert {"nt", "tm", "loss"} <= set(m[8]) and "mtr" not in m[8]
    # wiring, not convergence (tests/unit/test_carmania.py trains beta=1 against beta=0): nt falls,
    # tm stays sane
    assert m[8]["nt"] < m[1]["nt"]
    assert all(0 <= r["tm"] < 10 for r in m.values())
    valid = read_metrics(tmp_path / "ck", split="valid")[8]
    assert 0.0 <= valid["next_base_accuracy"] <= 1.0 and valid["perplexity"] > 1.0
    pp = run_train(2, [*args[:-2], "--tensor-model-parallel-size", "1", "--pipeline-model-parallel-size", "2",
                       "--ds_config", str(REPO / "ds_configs" / "cpu_pp.json"), "--save", "pp"], tmp_path)
    assert pp.returncode == 2 and "pipeline stages exist for MergeDNA only" in pp.stderr
