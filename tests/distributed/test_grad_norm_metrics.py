"""metrics.jsonl's merge_grad_norm and local_encoder_grad_norm (megamerge/training/grad_norms.py)
against the same gradient computed by plain PyTorch, on the layouts that read it differently:
ZeRO-2 on one rank with gradient accumulation, ZeRO-2 partitioned over two data-parallel ranks,
tensor parallelism (the Local Encoder replicated), and the two where it is null or absent (pipeline
stages, CARMANIA). Each layout is one logged iteration of the tiny preset
(tests/distributed/workers/group_grad_norms.py runs Trainer.run() as train.py does); the layouts
of one world size share a launch, one Trainer after another, since starting the processes costs
more than the iteration."""

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
# {world size: {layout: its flags}}: one launch per world size
LAYOUTS = {
    1: {
        "zero2_accumulation": [],  # micro 2 x accumulation 2
        "carmania": ["--model", "carmania-tiny"],
    },
    2: {
        "zero2_dp2": [],  # micro 2 x dp 2: each rank holds half of every gradient
        "tp2": ["--tensor-model-parallel-size", "2"],  # micro 2 x accumulation 2, Local Encoder replicated
        "pipeline": ["--pipeline-model-parallel-size", "2",
                     "--ds_config", str(REPO / "ds_configs" / "cpu_pp.json")],
    },
}


def launch(tmp_path: Path, nproc: int) -> dict[str, tuple[dict, list[dict]]]:
    """{layout: (metrics.jsonl's iteration-1 line, every rank's JSON from the worker)}."""
    layouts = LAYOUTS[nproc]
    run_workers("tests.distributed.workers.group_grad_norms", nproc, tmp_path,
                json.dumps({name: [*COMMON, *flags] for name, flags in layouts.items()}))
    return {name: (read_metrics(tmp_path / name / "run")[1],
                   [json.loads((tmp_path / name / f"rank{r}.json").read_text()) for r in range(nproc)])
            for name in layouts}


@pytest.fixture(scope="module")
def one_rank(tmp_path_factory):
    return launch(tmp_path_factory.mktemp("grad_norms_one_rank"), 1)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    return launch(tmp_path_factory.mktemp("grad_norms_two_ranks"), 2)


@pytest.mark.parametrize("layout, nproc", [("zero2_accumulation", 1), ("zero2_dp2", 2), ("tp2", 2)])
def test_group_norms_equal_plain_pytorch(request, layout, nproc):
    line, ranks = request.getfixturevalue({1: "one_rank", 2: "two_ranks"}[nproc])[layout]
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


def test_pipeline_stages_log_null(two_ranks):
    """The pipeline engine runs backward and step in one call: no gradient to read in between."""
    line, ranks = two_ranks["pipeline"]
    assert line["grad_norm"] is not None
    for key in GROUPS:
        assert line[key] is None and line[f"{key}_ratio"] is None
        assert all(rank["step"][key] is None for rank in ranks)


def test_carmania_logs_no_group_norms(one_rank):
    line, _ = one_rank["carmania"]
    assert line["grad_norm"] is not None
    assert [key for key in line if "grad_norm" in key] == ["grad_norm"]
