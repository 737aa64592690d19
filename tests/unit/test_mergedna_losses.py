"""The three pre-training passes: gradient routing, AMTM sampling, robustness, and learning."""

import pytest
import torch

from megamerge.models import MergeDNA, MergeDNAConfig
from megamerge.models.mergedna.masking import amtm_token_mask
from megamerge.vocabulary import PAD, N

LOSS_KEYS = {"loss", "mtr", "latent_mtr", "amtm"}


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return MergeDNA(MergeDNAConfig.from_preset("tiny")).train()


def _ids(B=2, n=256, seed=0):
    return torch.randint(0, 4, (B, n), generator=torch.Generator().manual_seed(seed))


def test_compute_losses_returns_the_documented_dict(tiny):
    out = tiny.compute_losses(_ids())
    assert LOSS_KEYS <= set(out)
    for k in LOSS_KEYS:
        assert out[k].dim() == 0 and torch.isfinite(out[k])
    assert out["bases_per_token"].dim() == 0 and 1.6 <= float(out["bases_per_token"]) <= 2.5
    assert out["latent_bases_per_token"].dim() == 0
    assert out["latent_bases_per_token"] > out["bases_per_token"]
    expected = out["mtr"] + 0.25 * out["latent_mtr"] + out["amtm"]
    assert torch.allclose(out["loss"], expected)


def test_grouping_embedding_gets_gradient_from_mtr(tiny):
    tiny.zero_grad(set_to_none=True)
    tiny.compute_losses(_ids())["mtr"].backward()
    for merger in tiny.local_encoder.mergers:
        grad = merger.grouping.weight.grad
        assert grad is not None and grad.abs().sum() > 0


def test_latent_mtr_sends_no_gradient_into_the_local_encoder(tiny):
    tiny.zero_grad(set_to_none=True)
    out = tiny.compute_losses(_ids())
    out["latent_mtr"].backward()
    for name, p in tiny.local_encoder.named_parameters():
        assert p.grad is None or torch.count_nonzero(p.grad) == 0, name
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in tiny.latent_encoder.parameters())


def test_amtm_inclusion_frequency_falls_with_group_size():
    # 4 latent groups of sizes 1, 2, 3, 4 -> 10 local tokens; P(token) is proportional to 1/g^2.
    sizes = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    group_of_token = torch.tensor([[0, 1, 1, 2, 2, 2, 3, 3, 3, 3]])
    valid = torch.ones(1, 10, dtype=torch.bool)
    trials = 4000
    gen = torch.Generator().manual_seed(0)
    hits = torch.zeros(10)
    for _ in range(trials // 100):
        mask = amtm_token_mask(group_of_token.expand(100, -1), sizes.expand(100, -1),
                               valid.expand(100, -1), torch.full((100,), 3), gen)
        assert bool((mask.sum(1) == 3).all())
        hits += mask.float().sum(0)
    freq_by_group = [hits[group_of_token[0] == i].mean().item() / trials for i in range(4)]
    assert freq_by_group[0] > freq_by_group[1] > freq_by_group[2] > freq_by_group[3], freq_by_group


def test_amtm_masks_whole_tokens_and_scores_only_masked_bases(tiny):
    # If AMTM scored unmasked bases, its loss would track MTR; check the mask construction instead:
    # every base of a masked token is masked, through the assignment map.
    ids = _ids(1, 128)
    tiny.eval()
    try:
        _, assign, mask = tiny.encode(ids)
    finally:
        tiny.train()
    token_mask = torch.zeros_like(mask)
    token_mask[0, ::3] = True
    base_mask = token_mask.gather(1, assign)
    for t in range(int(mask.sum())):
        covered = base_mask[0][assign[0] == t]
        assert bool(covered.all()) or not bool(covered.any())


@pytest.mark.parametrize("case", ["all_n", "shorter_than_window", "mixed_lengths", "single_base"])
def test_losses_stay_finite_on_edge_inputs(tiny, case):
    if case == "all_n":
        ids = torch.full((2, 64), N)
    elif case == "shorter_than_window":
        ids = _ids(2, 7)
    elif case == "mixed_lengths":
        ids = _ids(3, 100)
        ids[1, 9:] = PAD
        ids[2, 2:] = N
    else:
        ids = _ids(2, 1)
    tiny.zero_grad(set_to_none=True)
    out = tiny.compute_losses(ids)
    for k in LOSS_KEYS:
        assert torch.isfinite(out[k]), (k, out[k])
    out["loss"].backward()
    for p in tiny.parameters():
        assert p.grad is None or torch.isfinite(p.grad).all()


def test_pad_in_the_middle_is_rejected(tiny):
    ids = _ids(1, 20)
    ids[0, 5] = PAD
    with pytest.raises(ValueError, match="suffix"):
        tiny.compute_losses(ids)


# The 0.1 threshold was set with megamerge's rotary merge (and the global ranking, per-base AMTM and
# plain latent attention and single-layer latent merge of the time), so that row keeps those options.
# The paper's plain average is a bag of a token's bases and overfits more slowly (BENCHMARKS.md: MTR
# 0.30 against 0.02 after 150 MTR-only steps), so its row asks only for a loss far below chance
# (ln 4 = 1.39 nats/base) within the same 400 steps.
OVERFIT_CASES = {
    "megamerge_extensions": ({"rotary_merge": True, "merge_selection": "global_rank",
                              "amtm_normalization": "per_masked_base", "size_proportional_attention": False,
                              "latent_merge_schedule": "single_layer"}, 0.1),
    "paper_default": ({}, 0.5),
}


@pytest.mark.slow  # up to 400 training steps per row: minutes on a shared 2-core machine
@pytest.mark.parametrize("case", sorted(OVERFIT_CASES))
def test_tiny_model_overfits_one_batch(case):
    """4 random sequences of 512 bases: MTR must fall below the case's threshold (nats/base), so
    the whole path (merge, latent blocks, unmerge, local decoder) can carry every base."""
    overrides, threshold = OVERFIT_CASES[case]
    torch.manual_seed(0)
    model = MergeDNA(MergeDNAConfig.from_preset("tiny", **overrides)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.0)
    ids = torch.randint(0, 4, (4, 512), generator=torch.Generator().manual_seed(1))
    history = []
    for _ in range(400):
        out = model.compute_losses(ids)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        history.append(out["mtr"].item())
        if history[-1] < threshold:
            break
    assert min(history) < threshold, f"MTR only reached {min(history):.3f} nats/base"


def test_380m_preset_matches_table_a1():
    with torch.device("meta"):
        counts = MergeDNA(MergeDNAConfig.from_preset("380m")).parameter_counts()
    paper = {"local_encoder": 51e6, "latent_encoder": 253e6, "latent_decoder": 51e6, "local_decoder": 25e6}
    for module, expected in paper.items():
        assert abs(counts[module] - expected) / expected <= 0.10, (module, counts[module])
    assert abs(counts["total"] - 380e6) / 380e6 <= 0.05, counts["total"]


def test_seeded_draws_depend_only_on_the_sample(tiny):
    """Splitting a batch across ranks must not change any sample's randomness."""
    from megamerge.models.common.keyed_random import sample_seeds, uniform

    ids = _ids(4, 200, seed=5)
    seeds = sample_seeds(1234, torch.arange(100, 104))
    whole = tiny.token_targets(torch.full((4,), 200), seeds)
    halves = torch.cat([tiny.token_targets(torch.full((2,), 200), seeds[:2]),
                        tiny.token_targets(torch.full((2,), 200), seeds[2:])])
    assert torch.equal(whole, halves)
    assert len(set(whole.tolist())) > 1
    torch.manual_seed(0)
    a = tiny.compute_losses(ids, seeds)
    torch.manual_seed(99)  # the global RNG must play no part
    b = tiny.compute_losses(ids, seeds)
    for k in LOSS_KEYS:
        assert torch.equal(a[k], b[k])
    u = uniform(seeds, 1, 10000)
    assert 0 < u.min() and u.max() < 1 and abs(u.mean().item() - 0.5) < 0.01


def test_activation_checkpointing_changes_nothing_but_memory():
    from megamerge.models.common.keyed_random import sample_seeds
    from megamerge.training.activation_checkpointing import apply_activation_checkpointing

    ids = _ids(2, 200, seed=3)
    seeds = sample_seeds(0, torch.arange(2))
    grads = []
    for checkpointed in (False, True):
        torch.manual_seed(0)
        model = MergeDNA(MergeDNAConfig.from_preset("tiny")).train()
        if checkpointed:
            assert apply_activation_checkpointing(model) == 10  # every Transformer block
        out = model.compute_losses(ids, seeds)
        out["loss"].backward()
        grads.append((out["loss"].detach(), [p.grad.clone() for p in model.parameters()]))
    assert torch.equal(grads[0][0], grads[1][0])
    for a, b in zip(grads[0][1], grads[1][1]):
        assert torch.allclose(a, b, atol=1e-6)


def test_latent_decoder_blocks_share_one_pair_of_rope_tables_per_pass(monkeypatch):
    """RoPE's tables depend on the positions only, which the latent decoder's blocks share: one
    pair per pass (three passes), not one per block."""
    from megamerge.models.mergedna import latent_encoder

    calls, inside = [], [False]
    real = latent_encoder.rope_angles
    monkeypatch.setattr(latent_encoder, "rope_angles",
                        lambda *a, **k: (calls.append(inside[0]), real(*a, **k))[1])
    model = MergeDNA(MergeDNAConfig.from_preset("tiny"))
    model.latent_decoder.register_forward_pre_hook(lambda *_: inside.__setitem__(0, True))
    model.latent_decoder.register_forward_hook(lambda *_: inside.__setitem__(0, False))
    assert model.cfg.latent_decoder_layers > 1
    model.compute_losses(_ids())
    assert calls.count(True) == 3
