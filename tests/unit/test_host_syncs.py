"""Host-device synchronisations inside a training step (issue 27): every remaining one is named
here with its count, so a new `float()`, `.item()`, `if tensor:`, `.tolist()` or
`torch.tensor(host data, device=...)` in the step fails this test instead of quietly stalling the
GPU. Counted on the CPU by patching the Tensor methods and factories that wait for the device; the
code path is the same on CUDA."""

from __future__ import annotations

import json

import pytest
import torch

from megamerge.data.mock_data import MockGenome
from megamerge.models import MergeDNA, MergeDNAConfig
from megamerge.vocabulary import PAD, check_input_ids
from tests.helpers import counted_host_syncs, run_workers

# (file, function) -> calls in one compute_losses + backward of the tiny preset (two local merges per
# tokenizer pass, per_block latent merges), N = 1024, batch 2, one sample padded.
REMAINING = {
    # Right-padding of the input ids is checked (a clear error instead of garbage): one reduction.
    ("vocabulary.py", "check_input_ids"): 1,
    # Bases and token targets per row, copied to the host once: every merge's output width (a
    # data-dependent shape) is then computed there (token_merging.py, "Token counts on the host").
    ("models/mergedna/local_encoder.py", "host_counts"): 1,
}


@pytest.fixture
def counted_syncs():
    with counted_host_syncs() as counts:
        yield counts


def test_a_step_syncs_only_where_named(counted_syncs):
    torch.manual_seed(0)
    model = MergeDNA(MergeDNAConfig.from_preset("tiny")).train()
    ids = MockGenome(1024, seed=5).batch(torch.arange(2))
    ids[1, 900:] = PAD
    counted_syncs.clear()  # the batch's own construction is not the step
    out = model.compute_losses(ids, torch.tensor([1, 2]))
    out["loss"].backward()
    assert dict(counted_syncs) == REMAINING
    # negative control: a sync in megamerge's code is seen and attributed to its function
    check_input_ids(ids)
    assert (counted_syncs[("vocabulary.py", "check_input_ids")]
            == REMAINING[("vocabulary.py", "check_input_ids")] + 1)


@pytest.mark.parametrize("options", [{"merge_selection": "global_rank"},
                                     {"latent_merge_schedule": "single_layer", "latent_compression": 0.2}])
def test_other_merge_rules_size_their_merges_on_the_host_too(counted_syncs, options):
    torch.manual_seed(0)
    model = MergeDNA(MergeDNAConfig.from_preset("tiny", **options)).train()
    ids = MockGenome(256, seed=5).batch(torch.arange(2))
    ids[1, 200:] = PAD
    counted_syncs.clear()
    model.compute_losses(ids, torch.tensor([1, 2]))["loss"].backward()
    assert dict(counted_syncs) == REMAINING


# A whole `Trainer.train_step` of 2 micro-steps (tests/distributed/workers/trainer_step_syncs.py):
# compute_losses' syncs once per micro-step, and the trainer's own.
TRAIN_STEP = {
    "vocabulary.py:check_input_ids": 2,
    "models/mergedna/local_encoder.py:host_counts": 2,
    # Once per optimizer step, not per micro-step: DeepSpeed's finiteness check of the gradient norm
    # (2, deepspeed/runtime/utils.py is_invalid_grad_norm), torch AdamW's step counter (1, CPU only:
    # CUDA's fused AdamW keeps it on the device), the step's logged means to the host in one copy
    # with, on an iteration that logs, the merge gradient norms (1), the gradient norm for the log
    # line (1), and a scalar DeepSpeed's ZeRO step makes from the host (1, torch.tensor(..., device=)
    # in deepspeed/runtime/utils.py mask_nan_or_inf_with_val_inplace).
    "training/trainer.py:train_step": 6,
    # --mock-data draws each batch from CPU tensors on the host: no device involved.
    "data/mock_data.py:<listcomp>": 4,
}


@pytest.mark.slow  # a DeepSpeed engine in a subprocess: ~20 s
def test_a_trainer_step_syncs_only_where_named(tmp_path):
    out = tmp_path / "syncs.json"
    run_workers("tests.distributed.workers.trainer_step_syncs", 1, out)
    measured = json.loads(out.read_text())
    assert measured["syncs"] == TRAIN_STEP
    # the counted step logs, so it did compute the group norms (no sync of their own)
    assert measured["grad_norms"] == {"merge_grad_norm": True, "local_encoder_grad_norm": True}


def test_a_later_pipeline_stage_reads_what_it_received_back_once(counted_syncs):
    """Pipeline parallelism: a stage that receives the carry after the local encoder runs every
    latent layer and the local decoder with three syncs: the codes of the tuple it received, every
    pass's token counts at once (derived state, not sent), and the local decoder's input check.
    Within the stage the layers hand the codes and counts on (parallel/carry.py)."""
    from megamerge.models.common.batch import Batch
    from megamerge.models.mergedna.pipeline import PIPE_CLASSES, StageInputs
    from megamerge.models.mergedna.pipeline_layers import pipeline_layers
    from megamerge.parallel import carry

    torch.manual_seed(0)
    model = MergeDNA(MergeDNAConfig.from_preset("tiny")).train()
    layers = [PIPE_CLASSES[layer.kind](model, layer) for layer in pipeline_layers(model.cfg)]
    ids = MockGenome(256, seed=5).batch(torch.arange(2))
    ids[1, 200:] = PAD
    amtm_mask = (torch.rand(ids.shape, generator=torch.Generator().manual_seed(0)) < 0.15) & (ids != PAD)
    sent = layers[0](carry.to_tuple(StageInputs(Batch(ids, torch.tensor([1, 2])), amtm_mask)))
    carried = tuple(t.clone() for t in sent)  # what the next stage receives: new tensors
    counted_syncs.clear()
    for layer in layers[1:]:
        carried = layer(carried)
    carried[0].backward()
    assert dict(counted_syncs) == {("parallel/carry.py", "from_tuple"): 1,
                                   ("models/mergedna/pipeline.py", "with_host_counts"): 1,
                                   ("vocabulary.py", "check_input_ids"): 1}
