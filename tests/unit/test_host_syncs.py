"""Host-device synchronisations inside a training step (issue 27): every remaining one is named
here with its count, so a new `float()`, `.item()`, `if tensor:` or `.tolist()` in the step fails
this test instead of quietly stalling the GPU. Counted on the CPU by patching the Tensor methods
that wait for the device; the code path is the same on CUDA."""

from __future__ import annotations

import collections
import traceback
from pathlib import Path

import pytest
import torch

from megamerge.data.mock_data import MockGenome
from megamerge.models import MergeDNA, MergeDNAConfig
from megamerge.vocabulary import PAD, check_input_ids

SYNCING = ("item", "tolist", "__float__", "__int__", "__bool__", "__index__")
PACKAGE = Path(__file__).resolve().parents[2] / "megamerge"

# (file, function) -> calls in one compute_losses + backward of the tiny preset (two local merges per
# tokenizer pass, per_block latent merges), N = 1024, batch 2, one sample padded.
REMAINING = {
    # A merge's output width is the longest row it leaves: a data-dependent shape. One per merge
    # step: 2 local merges x passes 1 and 3, and pass 2's 4 latent merge points.
    ("models/mergedna/token_merging.py", "merge_step"): 8,
    # Bipartite steps repeat until every row is at its target (about log2(L / K) of them); one check
    # per latent merge point and step.
    ("models/mergedna/token_merging.py", "global_merge_to"): 8,
    # Right-padding of the input ids is checked (a clear error instead of garbage): two reductions.
    ("vocabulary.py", "check_input_ids"): 2,
}


@pytest.fixture
def counted_syncs(monkeypatch):
    """{(file under megamerge/, function): calls} of the syncing Tensor methods while the fixture lives."""
    counts = collections.Counter()

    def counting(name, original):
        def method(self, *args, **kwargs):
            for frame in reversed(traceback.extract_stack()[:-1]):
                path = Path(frame.filename).resolve()
                if PACKAGE in path.parents:
                    counts[(str(path.relative_to(PACKAGE)), frame.name)] += 1
                    break
            return original(self, *args, **kwargs)
        return method

    for name in SYNCING:
        monkeypatch.setattr(torch.Tensor, name, counting(name, getattr(torch.Tensor, name)))
    return counts


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
            == REMAINING[("vocabulary.py", "check_input_ids")] + 2)
