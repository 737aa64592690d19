"""Pipeline parallelism (2 stages, alone and with TP=2) against the unsplit model, in real gloo runs:
tests/distributed/workers/pipeline_parallel_mergedna.py on 2 ranks for PP=2, 4 ranks for TP=2 x PP=2,
and PP=2 with soft-masked bases weighted 0.1 (--softmask-loss-weight: the weights cross the stages).
"""

from __future__ import annotations

import json

import pytest

from tests.helpers import run_workers

pytestmark = pytest.mark.layout_equivalence

LAYOUTS = {"pp2": (1, 2, 1.0), "tp2pp2": (2, 2, 1.0), "pp2_softmask": (1, 2, 0.1)}  # tp, pp, soft-mask weight


@pytest.fixture(scope="module", params=sorted(LAYOUTS))
def measured(request, tmp_path_factory):
    tp, pp, softmask_weight = LAYOUTS[request.param]
    out = tmp_path_factory.mktemp(request.param) / "measured.json"
    run_workers("tests.distributed.workers.pipeline_parallel_mergedna", tp * pp, out, tp, pp, "{}",
                softmask_weight)
    return json.loads(out.read_text())


def test_pp2_forward_losses_match_pp1(measured):
    for key, (ref, got) in measured["forward"].items():
        assert abs(ref - got) <= 1e-5, (key, ref, got)


def test_pp2_gradients_match_pp1(measured):
    assert measured["n_compared"] == measured["n_params"]  # every parameter lives on exactly one stage
    assert measured["max_grad_diff"] <= 1e-5, measured["worst_grad"]
    assert measured["max_grad"] > 1e-3


def test_both_stages_hold_layers_and_the_merge_is_not_on_stage_0(measured):
    # The tiny model's latent MTR merges after every latent block (the paper's per_block); stage 0
    # holds the local encoder and some of them, so the merge state crosses the stage boundary in the
    # carry and the AMTM preview, and the map really has to come back across the pipeline.
    assert measured["stage_params"][0] > 0 and measured["stage_params"][1] > 0
    assert measured["merge_stages"][0] == 0 and measured["merge_stages"][-1] == 1
