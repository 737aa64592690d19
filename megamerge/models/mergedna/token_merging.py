"""Token merging with integer assignment maps (no dense L x N source matrices).

State is carried in a `TokenState`: token vectors, their size in bases (0 = padding), their
position (size-weighted mean base position), a validity mask whose True entries form a prefix of
each row, and `assign[b, n]`, the token that base n belongs to. A merge step decides, per token,
whether it merges away into a `partner`; the new index of every token is a cumsum over the kept
ones, so token order always follows base order. Maps compose with a gather; unmerging is a
gather whose backward is the scatter-add S^T.

Two merge rules:
* `local_window_merge`: only adjacent tokens inside the same window of `window` token slots may
  merge (the Local Encoder). Even slots propose to their better odd neighbour, so a token grows by
  at most its two neighbours per step and never more than half the tokens leave in one step.
  Which proposals are taken: the top r_l in each window (the paper's Eq. 5, `per_window`, the
  default; `window_quotas` spreads the sample's merge budget over its windows) or the r best
  across the whole sequence (megamerge's `merge_selection="global_rank"`).
  Scores come from a separate grouping embedding; since ranking has no gradient, the hard merge is
  given a straight-through gate (forward exactly 0/1, backward through a sigmoid of the score
  relative to the per-sample selection threshold), DTEM-style.

The paper's merge is the plain size-weighted average, and its unmerge a gather (every base of a
token receives the token's vector). Rotary merge (`rotary_theta` set; megamerge's extension,
`rotary_merge=True`). A plain average of a token's constituents is a bag:
the residual stream carries no absolute position (RoPE only touches attention scores), so the
decoder cannot tell which base sat where. Each constituent is therefore rotated by its offset
from the merged token's position (RoPE angles over the whole hidden vector) before the
size-weighted average, and `unmerge` rotates back by each base's own offset. The merge is
still a size-weighted average and unmerging still a gather (BENCHMARKS.md compares it with the
plain average).
* `global_merge_to`: ToMe's bipartite matching without a window, repeated until K tokens remain
  (latent MTR). Tokens stay in base order; groups need not be contiguous. `per_block_length`
  spreads the merges to K over several such steps (the paper's merge after every latent block).

Token counts on the host. A merge's output width is the longest row it leaves, a data-dependent
shape, and reading it from the device stalls a GPU until the queue drains. How many tokens each
row keeps is exact arithmetic on the counts before the merge (`window_merge_capacity`,
`bipartite_merge_capacity`: every valid token is a prefix of its row), so a `TokenState` can carry
its rows' counts as Python ints (`counts`), and a merge given them computes its width on the host
and only checks it on the device (`torch._assert_async`, which does not wait). Without counts (a
pipeline stage that received the state from another) the merge asks the device, as before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

from megamerge.models.common.rope import rotate_hidden

_gate_gradient = True  # False: the hard merge without its straight-through gradient (a benchmark control)


def set_gate_gradient(enabled: bool) -> None:
    """Whether the local merge's straight-through gate passes a gradient to the merge scores
    (benchmarks/merge_gradient.py's control cuts it to measure what it is worth)."""
    global _gate_gradient
    _gate_gradient = bool(enabled)


_SCORE_FLOOR = -3.0  # below any cosine similarity; stands in for "cannot merge" without inf arithmetic
# Host-side state that megamerge/parallel/carry.py does not send between pipeline stages.
NOT_CARRIED = {"carried": False}


@dataclass
class TokenState:
    x: torch.Tensor  # [B, L, D]
    pos: torch.Tensor  # [B, L] float, size-weighted mean base position
    sizes: torch.Tensor  # [B, L] float, bases covered (0 for padding)
    valid: torch.Tensor  # [B, L] bool, a prefix of each row
    assign: torch.Tensor  # [B, N] long, base -> token index
    counts: tuple[int, ...] | None = field(default=None, metadata=NOT_CARRIED)  # lengths, known on the host

    @property
    def lengths(self) -> torch.Tensor:  # [B]
        return self.valid.sum(1)

    def detach(self) -> TokenState:
        return replace(self, x=self.x.detach())

    @classmethod
    def from_bases(cls, x: torch.Tensor, base_valid: torch.Tensor,
                   base_counts: tuple[int, ...] | None = None) -> TokenState:
        """`base_counts`: base_valid's row sums, when the caller has them on the host."""
        B, N = base_valid.shape
        idx = torch.arange(N, device=x.device)
        return cls(
            x=x,
            pos=idx.float().expand(B, N),
            sizes=base_valid.float(),
            valid=base_valid,
            assign=idx.expand(B, N),
            counts=base_counts,
        )


def window_merge_capacity(count: int, window: int) -> int:
    """How many even slots of a row with `count` valid tokens can merge in `local_window_merge`:
    every even slot e < count that has a valid neighbour in its window (e + 1, or e - 1 unless e
    starts a window)."""
    last_alone = count % 2 == 1 and (count - 1) % window == 0
    return (count + 1) // 2 - int(last_alone)


def bipartite_merge_capacity(count: int) -> int:
    """How many even slots of a row with `count` valid tokens can merge in `global_bipartite_merge`."""
    return (count + 1) // 2 if count >= 2 else 0


def _output_width(new_lengths: torch.Tensor, new_counts: tuple[int, ...] | None) -> int:
    """The merge's output width: from the host counts when known (checked on the device without
    waiting), else read from the device (a sync)."""
    if new_counts is None:
        return max(int(new_lengths.max()), 1)
    width = max(max(new_counts), 1)
    torch._assert_async(new_lengths.max() <= width,
                        "token_merging: host token counts disagree with the device")
    return width


def _rank_desc(score: torch.Tensor) -> torch.Tensor:
    """rank[..., j] = position of score[..., j] in its row (last dim) sorted descending (0 = best)."""
    order = score.argsort(dim=-1, descending=True, stable=True)
    ranks = torch.arange(score.shape[-1], device=score.device).expand_as(order)
    return torch.empty_like(order).scatter_(-1, order, ranks)


def window_quotas(capacity: torch.Tensor, r: torch.Tensor, n_windows: torch.Tensor) -> torch.Tensor:
    """Merges per window [B, W] for the per-window rule (paper Eq. 5: r_l pairs in each window).
    The sample's budget r [B] is spread evenly over its n_windows [B] occupied windows, remainder
    to the first ones; a window that cannot take its share (capacity [B, W], its mergeable pairs)
    passes the shortfall on to the first windows with room, so the total is min(r, capacity sum)
    and the per-sample token target L_b is still met exactly."""
    W = capacity.shape[1]
    w = torch.arange(W, device=capacity.device)
    n_win = n_windows.clamp(min=1)[:, None]
    want = (r[:, None] // n_win + (w < r[:, None] % n_win).long()) * (w < n_win).long()  # [B, W]
    quota = torch.minimum(want, capacity)
    shortfall = (want - quota).sum(1, keepdim=True)  # [B, 1]
    room = capacity - quota
    room_before = room.cumsum(1) - room
    return quota + torch.minimum((shortfall - room_before).clamp(min=0), room)


def _select_top(score: torch.Tensor, quota: torch.Tensor,
                temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per group (a window, or the whole sequence), the quota [B, G] best of score [B, G, H]:
    returns (chosen [B, G, H] bool, straight-through soft gate [B, G, H]). The gate's threshold
    sits between the last chosen and the first unchosen score of the group."""
    H = score.shape[-1]
    chosen = _rank_desc(score) < quota[..., None]
    sorted_scores = score.sort(dim=-1, descending=True).values
    last_in = sorted_scores.gather(-1, (quota - 1).clamp(min=0)[..., None]).squeeze(-1)
    first_out = sorted_scores.gather(-1, quota.clamp(max=H - 1)[..., None]).squeeze(-1)
    last_in = torch.where(quota > 0, last_in, torch.full_like(last_in, 1.0 + temperature))
    first_out = torch.where(quota < H, first_out, torch.full_like(first_out, _SCORE_FLOOR))
    threshold = (0.5 * (last_in + first_out)).detach()
    soft = torch.sigmoid((score - threshold[..., None]) / temperature)
    return chosen, soft


def merge_step(
    state: TokenState,
    partner: torch.Tensor,  # [B, L] long: where token j goes if it merges (j itself if it cannot)
    removed: torch.Tensor,  # [B, L] bool: the hard decision
    gate: torch.Tensor,  # [B, L] float, == removed in value, may carry a straight-through gradient
    rotary_theta: float | None = None,
    new_counts: tuple[int, ...] | None = None,  # each row's tokens after the step, when known on the host
) -> tuple[TokenState, torch.Tensor]:
    """Apply one merge step; returns the new state and token_map [B, L] (old token -> new)."""
    B, _, D = state.x.shape  # [B, L, D]
    keep = ~removed
    new_lengths = state.lengths - removed.sum(1)
    width = _output_width(new_lengths, new_counts)
    # Padding tokens (size 0) are clamped onto the last slot; they add nothing to any sum.
    new_index = (keep.long().cumsum(1) - 1).clamp(0, width - 1)
    partner_new = new_index.gather(1, partner)
    token_map = torch.where(removed, partner_new, new_index)

    sizes = state.sizes.float()
    sizes_new = sizes.new_zeros(B, width).scatter_add(1, token_map, sizes)
    pos_new = (sizes.new_zeros(B, width).scatter_add(1, token_map, sizes * state.pos)
               / sizes_new.clamp_min(1.0))
    x = state.x.float()
    if rotary_theta is not None:  # express every constituent in its merged token's frame
        x = rotate_hidden(x, state.pos - pos_new.gather(1, token_map), rotary_theta)
    gate = gate.float()
    w_self = torch.where(removed, torch.zeros_like(gate), 1.0 - gate) * sizes  # [B, L]
    w_partner = gate * sizes  # [B, L]
    num = x.new_zeros(B, width, D)
    num = num.scatter_add(1, new_index[..., None].expand(-1, -1, D), x * w_self[..., None])
    num = num.scatter_add(1, partner_new[..., None].expand(-1, -1, D), x * w_partner[..., None])
    den = x.new_zeros(B, width).scatter_add(1, new_index, w_self).scatter_add(1, partner_new, w_partner)
    x_new = num / den.clamp_min(1e-6)[..., None]  # size-weighted average; padding slots -> 0

    new_state = TokenState(
        x=x_new.to(state.x.dtype),
        pos=pos_new,
        sizes=sizes_new,
        valid=torch.arange(width, device=x.device) < new_lengths[:, None],
        assign=token_map.gather(1, state.assign),
        counts=new_counts,
    )
    return new_state, token_map


def grouping_similarity(grouping: torch.Tensor) -> torch.Tensor:
    """grouping [B, L, G] -> cosine similarity of each adjacent pair (j, j+1) [B, L-1]: the learned
    merge score."""
    g = F.normalize(grouping.float(), dim=-1)
    return (g[:, :-1] * g[:, 1:]).sum(-1)


def local_window_merge(
    state: TokenState,
    similarity: torch.Tensor,  # [B, L-1] score in [-1, 1] of merging pair (j, j+1): grouping_similarity
    r: torch.Tensor,  # [B] long, merges wanted per sample
    window: int,
    temperature: float,
    rotary_theta: float | None = None,
    per_window: bool = True,
    host_r: tuple[int, ...] | None = None,  # r on the host, with state.counts
) -> tuple[TokenState, torch.Tensor]:
    """Merge r[b] adjacent pairs of each sample, top r_l per window (per_window, paper Eq. 5) or
    the r[b] best across the sequence (per_window=False, megamerge's global rank): min(r[b], the
    row's capacity) pairs either way."""
    B, L = state.valid.shape
    dev = similarity.device
    idx = torch.arange(L, device=dev)
    same_window = (idx[:-1] // window) == (idx[1:] // window)
    pair_ok = state.valid[:, :-1] & state.valid[:, 1:] & same_window  # pair (j, j+1)
    pair_score = similarity.float().masked_fill(~pair_ok, _SCORE_FLOOR)  # [B, L-1]
    pair_score = F.pad(pair_score, (1, 1), value=_SCORE_FLOOR)  # [B, L+1]; entry j: pair (j-1, j)

    evens = idx[0::2]  # [E]
    left, right = pair_score[:, evens], pair_score[:, evens + 1]  # [B, E]
    score = torch.maximum(left, right)
    can_merge = score > _SCORE_FLOOR
    partner_even = torch.where(right >= left, evens + 1, evens - 1)
    partner_even = torch.where(can_merge, partner_even, evens)

    r = torch.minimum(r, can_merge.sum(1))
    E = score.shape[1]
    if per_window:  # group the even slots by window: [B, W, window / 2]
        half = window // 2
        W = -(-E // half)
        grouped = F.pad(score, (0, W * half - E), value=_SCORE_FLOOR).view(B, W, half)
        capacity = (grouped > _SCORE_FLOOR).sum(-1)  # [B, W]
        quota = window_quotas(capacity, r, -(-state.lengths // window))
    else:  # one ranking across the sequence
        grouped, quota = score[:, None], r[:, None]
    chosen, soft = _select_top(grouped, quota, temperature)  # chosen implies can_merge: quota <= capacity
    chosen, soft = chosen.reshape(B, -1)[:, :E], soft.reshape(B, -1)[:, :E]
    gate_even = chosen.float() + soft - soft.detach() if _gate_gradient else chosen.float()
    gate_even = torch.where(can_merge, gate_even, torch.zeros_like(gate_even))

    removed = torch.zeros(B, L, dtype=torch.bool, device=dev)
    removed[:, evens] = chosen
    partner = idx.expand(B, L).clone()
    partner[:, evens] = partner_even
    gate = gate_even.new_zeros(B, L).index_copy(1, evens, gate_even)
    new_counts = None
    if state.counts is not None and host_r is not None:
        new_counts = tuple(c - min(r_b, window_merge_capacity(c, window))
                           for c, r_b in zip(state.counts, host_r))
    return merge_step(state, partner, removed, gate, rotary_theta, new_counts)


def global_bipartite_merge(
    state: TokenState, r: torch.Tensor, rotary_theta: float | None = None,
    host_r: tuple[int, ...] | None = None,
) -> tuple[TokenState, torch.Tensor]:
    """One ToMe step without a window: even slots merge into their most similar odd slot
    (min(r[b], the row's capacity) of them; `host_r`: r on the host, with state.counts)."""
    B, L = state.valid.shape
    dev = state.x.device
    if L < 2:
        return state, torch.zeros(B, L, dtype=torch.long, device=dev)
    idx = torch.arange(L, device=dev)
    a_idx, b_idx = idx[0::2], idx[1::2]
    x = F.normalize(state.x.detach().float(), dim=-1)
    sim = x[:, a_idx] @ x[:, b_idx].transpose(1, 2)  # [B, E, O]
    ok = state.valid[:, a_idx, None] & state.valid[:, None, b_idx]
    score, best = sim.masked_fill(~ok, _SCORE_FLOOR).max(-1)  # [B, E]
    can_merge = score > _SCORE_FLOOR
    r = torch.minimum(r, can_merge.sum(1))
    chosen = _rank_desc(score) < r[:, None]

    removed = torch.zeros(B, L, dtype=torch.bool, device=dev)
    removed[:, a_idx] = chosen
    partner = idx.expand(B, L).clone()
    partner[:, a_idx] = torch.where(can_merge, b_idx[best], a_idx)
    new_counts = None
    if state.counts is not None and host_r is not None:
        new_counts = tuple(c - min(r_b, bipartite_merge_capacity(c)) for c, r_b in zip(state.counts, host_r))
    return merge_step(state, partner, removed, removed.float(), rotary_theta, new_counts)


def excess_tokens(current: torch.Tensor | int, target: torch.Tensor | int) -> torch.Tensor | int:
    """max(current - target, 0): the merges a row still needs. Rows [B] on the device, or one row's
    counts as Python ints on the host (the same rule both places, so host widths match the device)."""
    if isinstance(current, torch.Tensor):
        return (current - target).clamp(min=0)
    return max(current - target, 0)


def merges_this_layer(current: torch.Tensor | int, target: torch.Tensor | int,
                      layers_left: int) -> torch.Tensor | int:
    """The Local Encoder's share for this layer: the remaining merges spread evenly over the layers
    left, rounded up so the last layer lands exactly on the target."""
    return -(-excess_tokens(current, target) // layers_left)


def global_merge_to(
    state: TokenState, target: torch.Tensor, rotary_theta: float | None = None,
    host_target: tuple[int, ...] | None = None,
) -> tuple[TokenState, torch.Tensor]:
    """Repeat bipartite steps until each sample has at most target[b] tokens (about
    log2(L / K) steps). Returns the merged state and the composed map [B, L] -> [0, K).
    With state.counts and `host_target` (target on the host) the loop is steered on the host."""
    B, L = state.valid.shape
    token_map = torch.arange(L, device=state.x.device).expand(B, L)
    on_host = state.counts is not None and host_target is not None
    for _ in range(max(1, math.ceil(math.log2(max(L, 2)))) + 1):
        excess = excess_tokens(state.lengths, target)
        host_excess = (tuple(excess_tokens(c, t) for c, t in zip(state.counts, host_target))
                       if on_host else None)
        if not (any(host_excess) if on_host else bool(excess.any())):
            break
        before = state.counts if on_host else state.lengths
        state, step_map = global_bipartite_merge(state, excess, rotary_theta, host_excess)
        token_map = step_map.gather(1, token_map)
        if before == state.counts if on_host else torch.equal(before, state.lengths):
            break  # nothing left that can merge (single-token rows)
    return state, token_map


def per_block_length(
    start: torch.Tensor | int,  # [B] long, L_b: tokens before the first step (or one row's, on the host)
    final: torch.Tensor | int,  # [B] long, K_b: tokens after the last step
    current: torch.Tensor | int,  # [B] long, tokens now (before step `step`)
    step: int,
    steps: int,
) -> torch.Tensor | int:  # [B] long
    """Tokens each sample keeps after merge step `step` of `steps`: ToMe's even share (a constant
    r per block, here (L_b - K_b) / steps, cumulative and rounded), kept within what one bipartite
    step can do (at most half the tokens leave: >= ceil(current / 2)) and what the remaining steps
    can still undo (<= K_b * 2^(steps - 1 - step), so the last step lands on K_b exactly whenever
    K_b >= L_b / 2^steps)."""
    share = start - (start - final) * (step + 1) // steps
    at_most_half = current - current // 2
    reachable = final * 2 ** (steps - 1 - step)
    if isinstance(start, int):  # the same counts on the host (token counts as Python ints)
        return min(max(share, at_most_half), reachable)
    return torch.minimum(torch.maximum(share, at_most_half), reachable)


def group_sizes(token_map: torch.Tensor, valid: torch.Tensor, n_groups: int) -> torch.Tensor:
    """How many valid tokens fall into each group: a bincount of token_map. [B, L] -> [B, K]."""
    out = torch.zeros(token_map.shape[0], n_groups, device=token_map.device)
    return out.scatter_add(1, token_map, valid.float())


def unmerge(
    z: torch.Tensor,  # [B, T, D] merged states
    assign: torch.Tensor,  # [B, S] long: which merged state each finer unit belongs to
    fine_pos: torch.Tensor | None = None,  # [B, S] positions of the finer units (rotary merge)
    merged_pos: torch.Tensor | None = None,  # [B, T] positions of the merged states (rotary merge)
    rotary_theta: float | None = None,
) -> torch.Tensor:  # [B, S, D]
    """z_S = S^T z_T as a gather (its backward is the scatter-add). With the rotary merge, each
    finer unit then rotates back by its own offset from its merged state's position."""
    out = z.gather(1, assign[..., None].expand(-1, -1, z.shape[-1]))
    if rotary_theta is None:
        return out
    offset = fine_pos - merged_pos.gather(1, assign)
    return rotate_hidden(out, -offset, rotary_theta)
