"""CARMANIA under tensor parallelism, in a real 2-process gloo run (torchrun): every block is split
the way megamerge.parallel splits MergeDNA's latent blocks (column-parallel wq/wk/wv/w1/w3, row-
parallel wo/w2, grouped K/V heads sharded with their query groups), and must reproduce the
unsplit model's losses, gradients and KV-cached generation logits."""

from __future__ import annotations

import json

import pytest

from tests.distributed.workers.tensor_parallel_carmania import CFG
from tests.helpers import run_workers

pytestmark = pytest.mark.layout_equivalence


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    out = tmp_path_factory.mktemp("carmania_tp") / "tp.json"
    run_workers("tests.distributed.workers.tensor_parallel_carmania", 2, out)
    return json.loads(out.read_text())


def test_tp2_losses_and_gradients_match_tp1(measured):
    for key, (ref, got) in measured["forward"].items():
        assert abs(ref - got) <= 1e-5, (key, ref, got)
    assert measured["max_grad_diff"] <= 1e-5, measured["worst_grad"]
    assert measured["max_grad"] > 1e-3
    assert measured["split_blocks"] == CFG["n_layers"]
    assert len(measured["flagged"]) == 7 * CFG["n_layers"]


def test_tp2_kv_cache_matches_full_forward(measured):
    assert measured["cache_vs_full"] <= 1e-5
    assert measured["tp_vs_tp1_logits"] <= 1e-5
