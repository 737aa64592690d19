"""DP, TP, PP and SP reproduce the unsplit model with megamerge's extensions selected (issue 15): the
rotary merge, the global merge ranking, AMTM averaged per masked base, plain attention after
the latent merge and the latent merge as one burst at half depth (single_layer), all at once. The paper's
settings of the same options are the defaults, which tests/distributed/test_parallel_tp.py,
test_parallel_pp.py, test_parallel_train.py and test_train_runs.py check; together every option is
covered in both settings. The same workers run here, given the options as a JSON argument."""

from __future__ import annotations

import json

import pytest

from tests.helpers import TINY_ARGS, describe, read_metrics, run_train, run_workers

pytestmark = pytest.mark.layout_equivalence

# in the config's field order, which paper_deviations follows
EXTENSIONS = {"rotary_merge": True, "merge_selection": "global_rank", "latent_merge_schedule": "single_layer",
              "size_proportional_attention": False, "amtm_normalization": "per_masked_base"}
EXTENSION_FLAGS = ["--rotary-merge", "--merge-selection", "global_rank",
                   "--amtm-normalization", "per_masked_base", "--no-size-proportional-attention",
                   "--latent-merge-schedule", "single_layer"]
KEYS = ("loss", "mtr", "latent_mtr", "amtm")


@pytest.fixture(scope="module", params=["tp2", "pp2", "sp2"])
def measured(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(request.param) / "measured.json"
    if request.param == "tp2":
        run_workers("tests.distributed.workers.tensor_parallel_mergedna", 2, out, json.dumps(EXTENSIONS))
    elif request.param == "sp2":
        run_workers("tests.distributed.workers.sequence_parallel_mergedna", 2, out, json.dumps(EXTENSIONS))
    else:
        run_workers("tests.distributed.workers.pipeline_parallel_mergedna", 2, out, 1, 2,
                    json.dumps(EXTENSIONS))
    return json.loads(out.read_text())


def test_split_model_forward_losses_match_the_unsplit_one(measured):
    for key, (ref, got) in measured["forward"].items():
        assert abs(ref - got) <= 1e-5, (key, ref, got)


def test_split_model_gradients_match_the_unsplit_one(measured):
    assert measured["max_grad_diff"] <= 1e-5, measured["worst_grad"]
    assert measured["max_grad"] > 1e-3  # real gradients, not zeros


def test_two_data_parallel_ranks_match_one_and_record_the_deviations(tmp_path):
    common = [*TINY_ARGS, *EXTENSION_FLAGS, "--seq-length", "128", "--micro-batch-size", "2",
              "--global-batch-size", "4", "--train-iters", "2", "--eval-interval", "100", "--clip-grad", "0"]
    runs = {}
    for nproc, name in ((1, "one"), (2, "two")):
        proc = run_train(nproc, [*common, "--save", name], tmp_path)
        assert proc.returncode == 0, f"{name}: {describe(proc)}"
        runs[name] = read_metrics(tmp_path / name)
        recorded = json.loads((tmp_path / name / "run_config.json").read_text())["paper_deviations"]
        assert recorded == [f"{k}={v}" for k, v in EXTENSIONS.items()]
    a, b = runs["one"], runs["two"]
    assert sorted(a) == sorted(b) == [1, 2]
    for it in a:
        for key in KEYS:
            assert abs(a[it][key] - b[it][key]) <= 1e-5, (it, key, a[it][key], b[it][key])
