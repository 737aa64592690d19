"""metrics.jsonl's merge_grad_norm and local_encoder_grad_norm (megamerge/training/grad_norms.py)
against the same gradient computed by plain PyTorch, on the layouts that read it differently:
ZeRO-2 on one rank with gradient accumulation, ZeRO-2 partitioned over two data-parallel ranks,
tensor parallelism (the Local Encoder replicated), and the two where it is null or absent (pipeline
stages, CARMANIA). Each launch is one logged iteration of the tiny preset
(tests/distributed/workers/group_grad_norms.py runs Trainer.run() as train.py does)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.helpers import REPO, TINY_ARGS, read_metrics, run_workers

GROUPS = ("merge_grad_norm", "local_encoder_grad_norm")
COMMON = [*TINY_ARGS, "--seq-length", "128", "--micro-batch-size", "2", "--global-batch-size", "4",
          "--eval-interval", "100"]
# A layout changes only the summation order of the reductions (tests/distributed/test_parallel_train.py
# measured grad norms equal to the digit); a lost reduction or a wrong scale is off by percents.
REL = 1e-5


def launch(tmp_path: Path, nproc: int, *flags: str) -> tuple[dict, list[dict]]:
    """metrics.jsonl's iteration-1 line and every rank's JSON from the worker."""
    run_workers("tests.distributed.workers.group_grad_norms", nproc, tmp_path, *COMMON, *flags)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(nproc)]
    return read_metrics(tmp_path / "run")[1], ranks


@pytest.mark.parametrize("layout, nproc, flags", [
    ("zero2_accumulation", 1, []),  # micro 2 x accumulation 2
    ("zero2_dp2", 2, []),  # micro 2 x dp 2: each rank holds half of every gradient
    ("tp2", 2, ["--tensor-model-parallel-size", "2"]),  # micro 2 x accumulation 2, Local Encoder replicated
])
def test_group_norms_equal_plain_pytorch(tmp_path, layout, nproc, flags):
    line, ranks = launch(tmp_path, nproc, *flags)
    reference = ranks[0]["reference"]
    for key in GROUPS:
        value = line[key]
        assert value is not None and math.isfinite(value) and value > 0, (layout, key, value)
        assert value == pytest.approx(reference[key], rel=REL), (layout, key)
        assert line[f"{key}_ratio"] == pytest.approx(value / line["grad_norm"], rel=1e-12)
        for rank in ranks:  # every rank computed the same norm, and its reference agrees
            assert rank["step"][key] == pytest.approx(value, rel=REL), (layout, key)
            assert rank["reference"][key] == pytest.approx(reference[key], rel=REL), (layout, key)
    # the reference procedure itself agrees with the engine's whole-model norm
    assert line["grad_norm"] == pytest.approx(reference["grad_norm"], rel=REL)
    assert 0 < line["merge_grad_norm"] < line["local_encoder_grad_norm"] < line["grad_norm"]
    if layout == "zero2_dp2":  # negative control: one rank's half of the batch is far off the norm
        for rank in ranks:
            assert rank["reference"]["merge_grad_norm_this_rank"] != pytest.approx(
                line["merge_grad_norm"], rel=1e-2)


def test_pipeline_stages_log_null(tmp_path):
    """The pipeline engine runs backward and step in one call: no gradient to read in between."""
    line, ranks = launch(tmp_path, 2, "--pipeline-model-parallel-size", "2",
                         "--ds_config", str(REPO / "ds_configs" / "cpu_pp.json"))
    assert line["grad_norm"] is not None
    for key in GROUPS:
        assert line[key] is None and line[f"{key}_ratio"] is None
        assert all(rank["step"][key] is None for rank in ranks)


def test_carmania_logs_no_group_norms(tmp_path):
    line, _ = launch(tmp_path, 1, "--model", "carmania-tiny")
    assert line["grad_norm"] is not None
    assert [key for key in line if "grad_norm" in key] == ["grad_norm"]
