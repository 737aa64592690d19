"""--softmask-loss-weight W: a base soft-masked in the input has its loss terms multiplied by W in
MTR, latent MTR, AMTM and CARMANIA's next-token loss, with each loss's normaliser unchanged
(common/losses.py). W = 1 is today's loss bit for bit; W = 0 makes the loss blind to those bases'
targets."""

from __future__ import annotations

import math

import pytest
import torch

from megamerge.models import Carmania, CarmaniaConfig, MergeDNA, MergeDNAConfig
from megamerge.models.common.losses import base_cross_entropy, softmask_base_weights
from megamerge.models.mergedna import objective
from megamerge.vocabulary import PAD

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models; see tests/conftest.py

LOSS_KEYS = ("loss", "mtr", "latent_mtr", "amtm")


def _batch(B=2, n=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 4, (B, n), generator=g)
    softmask = torch.zeros(B, n, dtype=torch.bool)
    softmask[:, n // 4 : n // 2] = True  # a repeat run in every row
    return ids, softmask


def test_hand_computed_weighted_cross_entropy():
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.125, 0.125],
                                      [0.25, 0.25, 0.25, 0.25],
                                      [0.1, 0.2, 0.3, 0.4]]]))  # fmt: skip
    targets = torch.tensor([[0, 3, 2]])
    weights = torch.tensor([[1.0, 0.5, 0.0]])
    loss, correct, scored = base_cross_entropy(logits, targets, weights=weights)
    # terms -log p: log 2, log 4, -log 0.3; weighted 1, 0.5, 0; divided by the 3 scored bases
    expected = (math.log(2) + 0.5 * math.log(4) + 0.0) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert int(scored) == 3 and int(correct) == 1  # counts are never weighted
    # AMTM per masked token: the weighted sum over masked bases, divided by K (unweighted)
    cfg = MergeDNAConfig.from_preset("tiny")
    select = torch.tensor([[True, True, False]])
    amtm, per_base, _, _ = objective.amtm_loss(cfg, logits, targets, select, torch.tensor([4]), weights)
    k = objective.amtm_token_count(cfg, torch.tensor([4])).item()  # round(0.5 * 4) = 2 masked tokens
    assert amtm.item() == pytest.approx((math.log(2) + 0.5 * math.log(4)) / k, rel=1e-6)
    assert per_base.item() == pytest.approx((math.log(2) + 0.5 * math.log(4)) / 2, rel=1e-6)


def test_weight_one_or_no_softmask_is_todays_loss_bit_for_bit():
    torch.manual_seed(0)
    model = MergeDNA(MergeDNAConfig.from_preset("tiny")).train()
    ids, softmask = _batch()
    seeds = torch.arange(ids.shape[0])
    plain = model.compute_losses(ids, seeds)
    assert softmask_base_weights(softmask, 1.0) is None
    assert softmask_base_weights(torch.zeros_like(softmask), 0.1) is None  # an old shard: no bit set
    assert softmask_base_weights(None, 0.1) is None
    same = model.compute_losses(ids, seeds, softmask_base_weights(softmask, 1.0))
    for key in LOSS_KEYS:
        assert torch.equal(plain[key], same[key]), key
    # An explicit all-ones weight tensor takes the weighted path and agrees to rounding.
    ones = model.compute_losses(ids, seeds, torch.ones(ids.shape))
    for key in LOSS_KEYS:
        assert torch.allclose(plain[key], ones[key], rtol=1e-6, atol=0), key
    down = model.compute_losses(ids, seeds, softmask_base_weights(softmask, 0.1))
    for key in LOSS_KEYS:  # a quarter of the bases weighs 0.1: every loss drops
        assert down[key] < plain[key], key


def _objective_losses(cfg, ids, weights, logits, base_mask):
    B, n = ids.shape
    lengths = torch.full((B,), n // 2)
    return objective.objective_outputs(cfg, ids, ids != PAD, *logits, base_mask, lengths, lengths // 2,
                                       weights)


def test_weight_zero_makes_the_losses_blind_to_softmasked_targets():
    cfg = MergeDNAConfig.from_preset("tiny")
    ids, softmask = _batch()
    g = torch.Generator().manual_seed(1)
    logits = [torch.randn(*ids.shape, 4, generator=g) for _ in range(3)]  # MTR, latent MTR, AMTM
    base_mask = torch.rand(ids.shape, generator=g) < 0.5
    base_mask |= softmask  # AMTM scores soft-masked bases too
    changed = torch.where(softmask, (ids + 1) % 4, ids)  # other targets, only where soft-masked
    for weight, blind in ((0.0, True), (1.0, False), (0.1, False)):
        weights = softmask_base_weights(softmask, weight)
        before = _objective_losses(cfg, ids, weights, logits, base_mask)
        after = _objective_losses(cfg, changed, weights, logits, base_mask)
        for key in LOSS_KEYS:
            assert torch.equal(before[key], after[key]) == blind, (weight, key)


def test_carmania_next_token_loss_weighs_the_predicted_base():
    torch.manual_seed(0)
    model = Carmania(CarmaniaConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=160,
                                    window=8)).eval()
    ids, _ = _batch(n=64)
    softmask = torch.zeros_like(ids, dtype=torch.bool)
    softmask[:, -1] = True  # the last base: seen by no prediction, only predicted
    changed = ids.clone()
    changed[:, -1] = (ids[:, -1] + 1) % 4
    plain = model.compute_losses(ids)
    assert torch.equal(plain["nt"],
                       model.compute_losses(ids, None, softmask_base_weights(softmask, 1.0))["nt"])
    blind = [model.compute_losses(x, None, softmask_base_weights(softmask, 0.0))["nt"]
             for x in (ids, changed)]
    assert torch.equal(blind[0], blind[1])
    assert not torch.equal(plain["nt"], model.compute_losses(changed)["nt"])
    # W = 0 drops the last of 63 predicted terms, and the normaliser stays 63 bases
    per_base = torch.nn.functional.cross_entropy(model(ids)[:, :-1].reshape(-1, 4), ids[:, 1:].reshape(-1),
                                                 reduction="none").view(ids.shape[0], -1)
    assert blind[0].item() == pytest.approx(per_base[:, :-1].sum().item() / per_base.numel(), rel=1e-5)
