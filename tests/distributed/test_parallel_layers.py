"""Direct tests of the tensor-parallel mappings and linear layers (megamerge/parallel/mappings.py,
layers.py), Megatron style, in a real 2-process gloo run: each conjugate pair forward and backward,
and column-parallel then row-parallel equal to the unsplit linear pair. Worker:
tests/distributed/workers/tensor_parallel_layers.py; its results are per rank."""

from __future__ import annotations

import json

import pytest

from tests.helpers import run_workers

pytestmark = pytest.mark.layout_equivalence

EXACT = 1e-12  # float64 throughout: an all-reduce of 2 terms is exact up to rounding of one addition


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("tp_layers") / "layers.json"
    run_workers("tests.distributed.workers.tensor_parallel_layers", 2, out)
    results = json.loads(out.read_text())
    assert [r["world"] for r in results] == [2, 2]
    return results


def test_copy_forward_is_identity_and_backward_all_reduces(ranks):
    for r in ranks:
        assert r["copy_forward"] == 0.0
        assert r["copy_backward"] <= EXACT


def test_reduce_forward_all_reduces_and_backward_is_identity(ranks):
    for r in ranks:
        assert r["reduce_forward"] <= EXACT
        assert r["reduce_leaves_input"] == 0.0
        assert r["reduce_backward"] == 0.0


def test_a_group_of_one_rank_passes_everything_through(ranks):
    for r in ranks:
        assert r["single_rank_forward"] == 0.0 and r["single_rank_backward"] == 0.0


def test_from_full_keeps_each_ranks_slice_and_flags_it(ranks):
    for r in ranks:
        assert r["column_shard"] == 0.0 and r["row_shard"] == 0.0
        assert r["column_weight_flagged"] and r["row_weight_flagged"]


def test_column_then_row_parallel_equals_the_unsplit_pair(ranks):
    for r in ranks:
        assert r["pair_output_magnitude"] > 1e-2  # not vacuous
        for key in ("pair_forward", "pair_input_grad", "pair_column_weight_grad", "pair_row_weight_grad"):
            assert r[key] <= 1e-12, (key, r[key])


def test_indivisible_sizes_and_biases_are_refused(ranks):
    for r in ranks:
        assert all(r["refused"].values()), r["refused"]
