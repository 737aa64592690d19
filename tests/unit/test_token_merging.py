"""Invariants of the learned tokenizer's merges and of global ToMe."""

from dataclasses import replace

import pytest
import torch

from megamerge.models import MergeDNA, MergeDNAConfig
from megamerge.models.mergedna.token_merging import (
    TokenState,
    global_merge_to,
    group_sizes,
    grouping_similarity,
    local_window_merge,
    per_block_length,
)
from megamerge.vocabulary import PAD


def _batch(lengths, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 4, (len(lengths), n), generator=g)
    for b, length in enumerate(lengths):
        ids[b, length:] = PAD
    return ids


def _check_partition(assign, valid_bases, n_tokens):
    """Every valid base in exactly one token; tokens are contiguous runs in base order."""
    for b in range(assign.shape[0]):
        a = assign[b, valid_bases[b]]
        assert a[0] == 0
        steps = a[1:] - a[:-1]
        assert bool(((steps == 0) | (steps == 1)).all()), "tokens must be contiguous and ordered"
        assert int(a[-1]) == int(n_tokens[b]) - 1, "every token covers at least one base"


def test_local_encoder_partitions_bases_in_order_within_compression_range():
    torch.manual_seed(0)
    model = MergeDNA(MergeDNAConfig.from_preset("tiny")).train()
    ids = _batch([512, 400, 333, 512], 512)
    valid = ids != PAD
    for _ in range(5):  # several compression-ratio draws
        targets = model.token_targets(valid.sum(1))
        state = model.local_encoder(ids, targets)
        n_tokens = state.lengths
        _check_partition(state.assign, valid, n_tokens)
        assert torch.equal(n_tokens, targets), "the per-sample merge target is hit exactly"
        ratio = n_tokens.float() / valid.sum(1)
        assert bool(((ratio >= 0.4) & (ratio <= 0.6)).all()), ratio
        # group sizes (a bincount of assign) match the tracked sizes and sum to N
        counts = group_sizes(state.assign, valid, state.x.shape[1])
        assert torch.equal(counts, state.sizes)
        assert torch.equal(counts.sum(1), valid.sum(1).float())
    assert len({int(t) for t in targets}) > 1, "merge counts differ per sample"


def test_eval_mode_uses_the_fixed_ratio():
    model = MergeDNA(MergeDNAConfig.from_preset("tiny")).eval()
    ids = _batch([512, 300], 512)
    _, assign, mask = model.encode(ids)
    assert mask.sum(1).tolist() == [256, 150]
    assert assign.shape == (2, 512)


def test_one_merge_step_respects_windows_and_per_sample_counts():
    B, L, window = 3, 64, 16
    g = torch.Generator().manual_seed(3)
    valid = torch.ones(B, L, dtype=torch.bool)
    valid[2, 40:] = False
    state = TokenState.from_bases(torch.randn(B, L, 8, generator=g), valid)
    r = torch.tensor([0, 32, 10])  # 32 = every even slot: the most one step may remove
    new, token_map = local_window_merge(state, grouping_similarity(torch.randn(B, L, 4, generator=g)), r,
                                          window, 0.1)
    assert new.lengths.tolist() == [64, 32, 30]
    for b in range(B):
        n_valid = int(valid[b].sum())
        m = token_map[b, :n_valid]
        for j in range(n_valid - 1):
            if m[j] == m[j + 1]:
                assert j // window == (j + 1) // window, "merged pair straddles a window edge"
    # size-weighted average: merged vectors are the mean of the bases they cover (sizes were 1)
    expected = torch.zeros(B, new.x.shape[1], 8)
    for b in range(B):
        expected[b] = torch.zeros(new.x.shape[1], 8).index_add_(
            0, token_map[b][valid[b]], state.x[b][valid[b]]) / new.sizes[b].clamp_min(1)[:, None]
    assert torch.allclose(new.x, expected, atol=1e-6)


def test_padding_never_scores_as_a_merge_candidate():
    L = 32
    valid = torch.zeros(1, L, dtype=torch.bool)
    valid[0, :5] = True
    state = TokenState.from_bases(torch.randn(1, L, 4), valid)
    grouping = torch.zeros(1, L, 4)
    grouping[0, 5:] = 1.0  # padded tokens are maximally similar to each other
    new, _ = local_window_merge(state, grouping_similarity(grouping), torch.tensor([100]), 16, 0.1)
    assert new.lengths.tolist() == [2]  # only the 5 valid tokens merge: evens 0, 2, 4 leave
    assert new.sizes[0, :2].sum() == 5 and new.sizes[0, 2:].sum() == 0


def test_global_merge_reaches_k_and_preserves_mass():
    g = torch.Generator().manual_seed(1)
    valid = torch.ones(2, 101, dtype=torch.bool)
    valid[1, 60:] = False
    state = TokenState.from_bases(torch.randn(2, 101, 16, generator=g), valid)
    target = torch.tensor([13, 30])
    merged, token_map = global_merge_to(state, target)
    assert merged.lengths.tolist() == [13, 30]
    sizes = group_sizes(token_map, valid, merged.x.shape[1])
    assert sizes[0].sum() == 101 and sizes[1].sum() == 60
    assert bool((sizes[merged.valid] >= 1).all())
    # total mass of the vectors is preserved by a size-weighted average
    assert torch.allclose((merged.x * merged.sizes[..., None]).sum(1),
                          (state.x * valid[..., None]).sum(1), atol=1e-4)


def test_per_block_schedule_lands_on_k_and_never_halves_more_than_once_a_step():
    """Every sample, any K_b >= L_b / 2^steps: the last step ends at K_b exactly, no step removes more
    than half the tokens (a bipartite step cannot) and, with K = L/2, the steps share the merges
    evenly (ToMe's constant r per block, within one token)."""
    g = torch.Generator().manual_seed(0)
    for steps in (1, 2, 4, 20):
        start = torch.randint(1, 3000, (256,), generator=g)
        ratio = 0.5**steps + torch.rand(256, generator=g) * (1 - 0.5**steps)
        final = (ratio * start).ceil().long().clamp(min=1)
        current = start.clone()
        for step in range(steps):
            after = per_block_length(start, final, current, step, steps)
            assert bool((after <= current).all()) and bool((2 * after >= current).all())
            current = after
        assert torch.equal(current, final)
    half = torch.tensor([4096, 1001])
    current, removed = half, []
    for step in range(20):
        after = per_block_length(half, (half + 1) // 2, current, step, 20)
        removed.append(current - after)
        current = after
    removed = torch.stack(removed, 1)  # [B, steps]
    assert bool((removed.max(1).values - removed.min(1).values <= 1).all())


def test_host_token_counts_equal_the_device_lengths_after_every_merge():
    """token_merging.py sizes a merge from counts on the host (no device sync): the capacity
    formulas must give exactly what the device merges, on the edge cases too (one-token rows, a
    lone last token at a window start, r above the capacity, several bipartite rounds)."""
    g = torch.Generator().manual_seed(7)
    for window in (2, 4, 16):
        for trial in range(25):
            B, L = 4, int(torch.randint(1, 70, (1,), generator=g))
            counts = [int(c) for c in torch.randint(1, L + 1, (B,), generator=g)]
            valid = torch.arange(L)[None] < torch.tensor(counts)[:, None]
            state = TokenState.from_bases(torch.randn(B, L, 8, generator=g), valid, tuple(counts))
            r = tuple(int(x) for x in torch.randint(0, L + 2, (B,), generator=g))
            for per_window in (True, False):
                grouping = torch.randn(B, L, 4, generator=g)
                new, _ = local_window_merge(state, grouping_similarity(grouping), torch.tensor(r), window,
                                            0.1, per_window=per_window, host_r=r)
                assert list(new.counts) == new.lengths.tolist(), (window, counts, r)
            target = tuple(int(x) for x in torch.randint(1, L + 1, (B,), generator=g))
            merged, _ = global_merge_to(state, torch.tensor(target), host_target=target)
            device_only, _ = global_merge_to(replace(state, counts=None), torch.tensor(target))
            assert list(merged.counts) == merged.lengths.tolist() == device_only.lengths.tolist(), (
                counts, target)
            assert merged.x.shape == device_only.x.shape and torch.equal(merged.x, device_only.x)


def test_wrong_host_counts_are_caught_on_the_device():
    valid = torch.ones(1, 16, dtype=torch.bool)
    state = TokenState.from_bases(torch.randn(1, 16, 4), valid, (3,))  # the device has 16 tokens
    with pytest.raises(RuntimeError, match="host token counts disagree with the device"):
        local_window_merge(state, grouping_similarity(torch.randn(1, 16, 4)), torch.tensor([1]), 16, 0.1,
                           host_r=(1,))


@pytest.mark.parametrize("compression", [0.5, 0.3, 0.37, 0.123456789])
def test_latent_token_count_on_the_host_matches_the_device_float32(compression):
    from megamerge.models.mergedna.objective import latent_token_count

    schedule = "per_block" if compression >= 0.3 else "single_layer"
    cfg = MergeDNAConfig(latent_compression=compression, latent_merge_schedule=schedule)
    lengths = torch.arange(1, 5000)
    assert latent_token_count(cfg, lengths).tolist() == [latent_token_count(cfg, n) for n in range(1, 5000)]
