"""The tokenizer ablation's controls (merge_decisions.py): random merges keep the learned merges'
per-window counts, fixed merges cut N/L-base chunks, and the switch acts on a built model."""

import pytest
import torch

from megamerge.models import MergeDNA, MergeDNAConfig
from megamerge.models.mergedna.merge_decisions import random_similarity
from megamerge.models.mergedna.token_merging import TokenState, grouping_similarity, local_window_merge

N = 512


def _model(**overrides) -> MergeDNA:
    torch.manual_seed(0)
    cfg = MergeDNAConfig(dim=32, n_heads=2, ffn_dim=64, local_encoder_layers=2, latent_encoder_layers=1,
                         latent_decoder_layers=1, local_decoder_layers=1, grouping_dim=8, **overrides)
    return MergeDNA(cfg).eval()


@torch.no_grad()
def _tokenize(model: MergeDNA, ids: torch.Tensor, decisions: str):
    model.cfg.merge_decisions = decisions
    targets = model.token_targets(torch.full((ids.shape[0],), ids.shape[1]))
    return model.local_encoder(ids, targets), targets


def _boundaries(assign: torch.Tensor) -> torch.Tensor:  # [B, N] -> [B, N-1]: a token starts at n+1
    return assign.diff(dim=1) != 0


def test_random_merges_take_each_windows_quota():
    """The paper's budget (Eq. 5): each window of 16 token slots merges its r_l pairs whatever the
    scores, so random scores change which pairs, never how many per window."""
    B, L, window = 3, 96, 16
    valid = torch.arange(L)[None] < torch.tensor([96, 70, 33])[:, None]
    state = TokenState.from_bases(torch.randn(B, L, 8), valid)
    r = torch.tensor([30, 20, 9])

    def removed_per_window(similarity):
        _, token_map = local_window_merge(state, similarity, r, window, 0.1)
        merged_into_previous = torch.cat([torch.zeros(B, 1, dtype=torch.bool), token_map.diff(dim=1) == 0], 1)
        return (merged_into_previous & valid).view(B, L // window, window).sum(-1)  # [B, W]

    learned = removed_per_window(grouping_similarity(torch.randn(B, L, 4)))
    for seed in range(3):
        torch.manual_seed(seed)
        assert torch.equal(removed_per_window(random_similarity(state)), learned)


def test_random_merges_keep_the_counts_and_change_the_choices():
    model = _model()
    ids = torch.randint(0, 4, (3, N), generator=torch.Generator().manual_seed(1))
    learned, targets = _tokenize(model, ids, "learned")
    torch.manual_seed(5)
    chance, _ = _tokenize(model, ids, "random")
    torch.manual_seed(6)
    other_chance, _ = _tokenize(model, ids, "random")
    assert chance.lengths.tolist() == learned.lengths.tolist() == targets.tolist()
    disagree = (_boundaries(chance.assign) != _boundaries(learned.assign)).float().mean()
    assert disagree > 0.2  # chance placement, not the learned one
    assert not torch.equal(chance.assign, other_chance.assign)


@pytest.mark.parametrize("compression,exact_share", [(0.5, 1.0), (0.4, 0.85), (0.6, 0.95)])
def test_fixed_merges_cut_chunks_of_n_over_l_bases(compression, exact_share):
    model = _model(eval_compression=compression)
    ids = torch.randint(0, 4, (2, N), generator=torch.Generator().manual_seed(2))
    fixed, targets = _tokenize(model, ids, "fixed")
    assert fixed.lengths.tolist() == targets.tolist()
    chunks = torch.arange(N) * targets[:, None] // N  # [B, N] base n -> chunk floor(n L / N)
    agree = (_boundaries(fixed.assign) == _boundaries(chunks)).float().mean()
    assert agree >= exact_share
    learned, _ = _tokenize(model, ids, "learned")
    assert (_boundaries(learned.assign) == _boundaries(chunks)).float().mean() < 0.8


def test_the_switch_is_a_named_deviation_and_a_flag():
    from megamerge.training.arguments import parse_args

    assert MergeDNAConfig(merge_decisions="random").paper_deviations() == ["merge_decisions=random"]
    assert MergeDNAConfig().paper_deviations() == []
    args = parse_args(["--mock-data", "--model", "tiny", "--merge-decisions", "fixed"])
    assert args.merge_decisions == "fixed"
    with pytest.raises(ValueError, match="merge_decisions='chance' must be one of"):
        MergeDNAConfig(merge_decisions="chance")


def test_losses_run_under_every_switch():
    model = _model().train()
    ids = torch.randint(0, 4, (2, 64))
    for decisions in ("learned", "random", "fixed"):
        model.cfg.merge_decisions = decisions
        out = model.compute_losses(ids)
        out["loss"].backward()
        grouping_grad = model.local_encoder.mergers[0].grouping.weight.grad
        # Only the learned scores reach the grouping embedding.
        assert (grouping_grad is not None and grouping_grad.abs().sum() > 0) == (decisions == "learned")
        model.zero_grad(set_to_none=True)
