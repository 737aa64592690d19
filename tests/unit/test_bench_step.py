"""benchmarks/bench_step.py (issue 27's CPU before/after) end to end at a small N: its three tables,
and the profiler split that bounds what a kernel set can gain."""

import pytest

from benchmarks import bench_step


def test_compute_kernels_are_the_matmuls_and_sdpa():
    assert all(bench_step.in_compute_kernels(op) for op in (
        "aten::mm", "aten::bmm", "aten::_scaled_dot_product_flash_attention_for_cpu",
        "aten::_scaled_dot_product_flash_attention_for_cpu_backward"))
    assert not any(bench_step.in_compute_kernels(op) for op in ("aten::mul", "aten::copy_", "aten::gather"))


def test_bench_step_prints_both_sets_and_the_bound(capsys):
    assert bench_step.main(["--seq-len", "256", "--repeats", "1", "--no-write"]) == 0
    out = capsys.readouterr().out
    assert "| tiny, N = 256 |" in out and "| local attention, window 16, N |" in out
    steps = {c: float(t) for c, t in zip(("old", "new"), out.split("| tiny, N = 256 |")[1].split("|")[:2])}
    splits = {line.split("|")[1].strip(): [float(c) for c in line.split("|")[2:4]]
              for line in out.splitlines() if line.startswith(("| old |", "| new |"))}
    assert splits.keys() == {"old", "new"}
    assert all(0 < compute < step for step, compute in splits.values())
    bound = float(out.split("compute share, ")[1].split("x")[0])
    step, compute = splits["new"]
    assert bound == pytest.approx(steps["old"] / steps["new"] * step / compute, rel=0.05)
