"""Sequence parallelism (megamerge/parallel/sequence_parallel.py) against the unsplit model, in a
real 2-process gloo run: tests/distributed/workers/sequence_parallel_mergedna.py builds the same
model on both ranks, splits a copy over the 2-rank group and compares forward losses, gradients
(summed over the group, as ZeRO sums them) and three AdamW iterations, on a batch whose samples
have different lengths (ragged token counts across the shards, one sample entirely on rank 0).
train.py's --sequence-parallel-size (losses, resume, conversion) is in test_parallel_train.py;
megamerge's model options under SP in test_fidelity_layouts.py."""

from __future__ import annotations

import json

import pytest

from tests.distributed.workers.sequence_parallel_mergedna import ITERS
from tests.helpers import run_workers

pytestmark = pytest.mark.layout_equivalence


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    out = tmp_path_factory.mktemp("sp") / "sp.json"
    run_workers("tests.distributed.workers.sequence_parallel_mergedna", 2, out)
    return json.loads(out.read_text())


def test_sp2_forward_losses_match_sp1(measured):
    for key, (ref, got) in measured["forward"].items():
        assert abs(ref - got) <= 1e-5, (key, ref, got)
    assert measured["token_lengths_equal"]  # the same merges


def test_sp2_summed_gradients_match_sp1(measured):
    assert measured["max_grad_diff"] <= 1e-5, measured["worst_grad"]
    assert measured["max_grad"] > 1e-3  # real gradients, not zeros
    # float64 blocks: only the merge arithmetic's float32 is left
    assert measured["float64"]["max_grad_diff"] <= 1e-7, measured["float64"]["worst_grad"]


def test_sp2_three_training_iterations_match_sp1(measured):
    ref, got = measured["train_losses"]
    assert len(ref) == len(got) == ITERS
    assert ref[0] != ref[-1]  # the weights moved
    for a, b in zip(ref, got):
        assert abs(a - b) <= 1e-4, (ref, got)


def test_every_block_is_split(measured):
    assert measured["blocks"] == measured["n_blocks"] == 10  # tiny: 2 + 4 + 2 + 2


def test_carmania_sp2_matches_sp1(measured):
    ref, got = measured["carmania"]["loss"]
    assert abs(ref - got) <= 1e-5
    assert measured["carmania"]["max_grad_diff"] <= 1e-5, measured["carmania"]["worst_grad"]
    assert measured["carmania"]["max_grad"] > 1e-3


def test_sp2_with_compiled_blocks_matches_sp1(tmp_path):
    """train.py --compile with --sequence-parallel-size 2: every block compiled, then split; the
    all-to-all runs eager between a block's compiled parts. Traced by dynamo and AOT autograd
    (backend aot_eager): inductor's code for the same blocks is test_compile.py's, and would cost
    minutes per rank here."""
    out = tmp_path / "sp_compiled.json"
    run_workers("tests.distributed.workers.sequence_parallel_mergedna", 2, out,
                json.dumps({"compile_backend": "aot_eager"}))
    measured = json.loads(out.read_text())
    assert measured["compiled"] == measured["blocks"] == 10 and measured["compiled_graphs"] > 0
    for key, (ref, got) in measured["forward"].items():
        assert abs(ref - got) <= 1e-5, (key, ref, got)
    assert measured["max_grad_diff"] <= 1e-5, measured["worst_grad"]
    assert measured["max_grad"] > 1e-3
