"""benchmarks/gpu_check.py --dry-run end to end on CPU, so the GPU check cannot rot between GPU runs."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_gpu_check_dry_run_writes_both_reports(tmp_path):
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--out", str(tmp_path), "--dry-run",
                           "--budget-minutes", "6"], cwd=REPO, capture_output=True, text=True, timeout=420,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_report.json").read_text())
    assert report["dry_run"] and report["environment"]["torch"]
    assert report["cuda_tests"]["status"] == "skipped" and report["cuda_tests"]["reason"]
    runs = report["measurements"]
    assert [r["status"] for r in runs] == ["ok", "ok", "ok"], runs
    assert {r["checkpointing"] for r in runs} == {False, True}
    # --kernels both (the default): the old kernels (benchmarks/kernel_sets.py) timed beside today's
    assert [r["kernels"] for r in runs] == ["new", "new", "old"]
    for r in runs:
        assert r["step_s"] > 0 and r["bases_per_s"] > 0 and r["tflops"] > 0 and r["mfu"] is None
        assert 1.5 < r["ratios"]["bases_per_token"] < 2.5  # the tiny preset's compression on random bases
    parts = runs[0]["profile_by_module"]
    for part in ("local attention", "latent attention", "MLPs", "merge layers", "optimizer"):
        assert part in parts, parts
    assert parts["local attention"]["forward_ms"] > 0 and parts["local attention"]["backward_ms"] > 0
    assert runs[0]["profiler_top"]
    md = (tmp_path / "gpu_report.md").read_text()
    assert "dry run" in md and "| tiny | 1 | False |" in md and "Where the time goes" in md
