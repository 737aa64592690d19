"""Analytic activation memory of one MergeDNA training step (the three passes of
`MergeDNA.compute_losses`): the bytes autograd keeps for the backward pass, site by site, and the
transient peak on top of them while the backward pass runs.

Every term below is a tensor that a saved-for-backward census of a real step finds
(benchmarks/activation_census.py), written as a function of the config, the micro-batch and the
sequence length; tests/unit/test_estimate_memory.py holds the two within 10% on a tiny shape. What a
tensor costs depends on the kernel that saves it, so there are two kernel sets:

gpu  flash-attn (local windows and full attention alike) keeps the unpadded q, k, v, its output
     and the log-sum-exp: O(tokens) whatever the span. The output is scattered back into a padded
     [B, L, H, hd] tensor, which wo keeps as well. A block with pass 2's key bias runs SDPA in the
     key-column form instead (flash-attn takes no bias): q, k, v and the output at the padded head
     dim, the log-sum-exp, and the output sliced back for wo. RMSNorm is a fused kernel (apex, or torch's
     CUDA rms_norm): it keeps its input and 1/rms.
cpu  full attention takes SDPA's fused flash kernel for CPU without a mask, one call per row
     (full_attention.py, "per_row"): it keeps q, k, v, the output and the log-sum-exp, and wo keeps
     the output rows padded and copied back into [B, L, H * hd]; a block with pass 2's key bias
     runs the key-column form on each row, so its q, k, v and output are at the padded head dim.
     The blocked local attention keeps only q, k and v (its backward recomputes the attention
     chunk by chunk) and its output is copied for wo.
     RMSNorm is composed of elementwise ops and also keeps x / rms (its weight's gradient).

Sequence parallelism (DeepSpeed-Ulysses, `sp` = S ranks reading the same samples): every
Transformer block runs on a 1/S contiguous slice of the token (or base) width, padded up to a
multiple of S, and its output is all-gathered back into the replicated [B, T, D] stream. A
local-window block's slice takes a halo of `window` tokens on each side; a full-attention block
takes none and runs attention over all T tokens for n_heads / S heads after the all-to-all, whose
q, k, v, output and log-sum-exp ([B, T, H/S, hd]) are the same size as [B, T/S, H, hd]. So each
part="blocks" site (the blocks and their RoPE tables) is priced at `block_tokens` tokens, and each
part="other" site (embedding, merges, unmerges, final norms, head, losses) at the full width on
every rank. The slice is taken to be a copy, so that what a block keeps is 1/S of the stream and not
the gathered buffer. The backward working set of each block adds the gathered [B, T, D] stream
(one buffer per block boundary, freed after it).

Left out: per-token scalars, masks and index maps (sizes, positions, merge weights, scatter
indices, validity masks: tens of bytes per token against kilobytes for the tensors counted), and
the embedding's input ids.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from megamerge.models.common.full_attention import key_column_head_dim
from megamerge.models.common.local_attention import default_block
from megamerge.models.mergedna.config import MergeDNAConfig
from megamerge.models.mergedna.objective import latent_token_count
from megamerge.models.mergedna.token_merging import per_block_length

FP32 = 4  # RoPE tables, 1/rms, log-sum-exp, the merge arithmetic and the loss run in fp32 in every precision
PASSES = ("MTR", "latent MTR", "AMTM")
MODULES = ("local_encoder", "latent_encoder", "latent_decoder", "local_decoder", "outside")


@dataclass(frozen=True)
class Kernels:
    device: str  # "gpu" or "cpu"
    nbytes: int  # bytes per activation element: 2 (bf16) or 4 (fp32)

    def __post_init__(self):
        if self.device not in ("gpu", "cpu"):
            raise ValueError(f"device must be 'gpu' or 'cpu', not {self.device!r}")


@dataclass(frozen=True)
class Site:
    """Bytes kept for backward by one place in the graph, for one sample of the micro-batch."""

    pass_name: str  # one of PASSES
    module: str  # one of MODULES: where a census attributes it (the module whose forward saves it)
    part: str  # "blocks" (Transformer blocks and their RoPE tables) or "other"
    stage_layer: str  # the pipeline layer holding it: local_encoder, latent_encoder, latent_norm, ...
    nbytes: float  # saved bytes per sample
    # Transformer blocks only: bytes per sample when checkpointed (the block's input), and the
    # backward working set (see block_backward_working_bytes).
    checkpointed_nbytes: float | None = None
    working_nbytes: float = 0.0


# ------------------------------------------------------------------------------- token counts
@dataclass(frozen=True)
class TokenCounts:
    """Row widths of one sample in each pass; tensors are padded to the widest row of a batch, so
    the estimate takes the widest row the sampler can draw."""

    bases: int  # N
    local_encoder: tuple[int, ...]  # tokens entering each local-encoder layer; the last entry is L
    latent: int  # L
    latent_merges: tuple[LatentMerge, ...]  # latent MTR's merges, one per cfg.latent_merge_points
    latent_merged: int  # K


@dataclass(frozen=True)
class LatentMerge:
    point: int  # merges before latent-encoder block `point` (latent_encoder_layers: after the last)
    step_widths: tuple[int, ...]  # widths entering each of its bipartite steps
    width: int  # tokens after it


def token_counts(cfg: MergeDNAConfig, seq: int) -> TokenCounts:
    # The widest batch the clipped Gaussian can draw (MergeDNA.token_targets): memory must fit it.
    L = max(1, math.floor(cfg.compression_range[1] * seq))
    widths = [seq]
    for i in range(cfg.local_encoder_layers):  # LocalEncoder spreads the reduction evenly (ceil)
        T = widths[-1]
        remaining = max(T - L, 0)
        r = min(-(-remaining // (cfg.local_encoder_layers - i)), T // 2)  # a layer at most halves
        widths.append(T - r)
    L = widths[-1]
    merges = latent_merges(cfg, L)
    return TokenCounts(seq, tuple(widths), L, merges, merges[-1].width)


def latent_merges(cfg: MergeDNAConfig, L: int) -> tuple[LatentMerge, ...]:
    """Latent MTR's merge points for a row of L tokens, with the widths objective.merge_latent
    steps through (per_block: its share each block; single_layer: the whole way in one burst)."""
    start = torch.tensor([L])
    K = int(latent_token_count(cfg, start))
    points, T, out = cfg.latent_merge_points, L, []
    for step, point in enumerate(points):
        target = K
        if cfg.latent_merge_schedule == "per_block":
            target = int(per_block_length(start, start.new_tensor([K]), start.new_tensor([T]), step,
                                          len(points)))
        steps = []
        while T > target:  # global_merge_to: bipartite steps, each merging at most the even half
            steps.append(T)
            T -= min(T - target, T // 2)
        out.append(LatentMerge(point, tuple(steps), T))
    return tuple(out)


# ---------------------------------------------------------------------------- per-site terms
def norm_bytes(cfg: MergeDNAConfig, k: Kernels) -> float:
    """Per token, what an RMSNorm keeps besides its output (which its consumer keeps): its input
    and 1/rms, plus x / rms for the composed CPU op."""
    kept_inputs = 1 if k.device == "gpu" else 2
    return kept_inputs * cfg.dim * k.nbytes + FP32


def block_tokens(cfg: MergeDNAConfig, tokens: int, sp: int, local: bool) -> int:
    """Tokens one rank's copy of a Transformer block runs on when a row of `tokens` is split over
    `sp` sequence-parallel ranks: a 1/S slice of the width padded up to a multiple of S, plus a halo
    of `window` tokens on each side for local attention (the widest, interior shard)."""
    if sp == 1:
        return tokens
    return -(-tokens // sp) + (2 * cfg.window if local else 0)


def gathered_stream_bytes(cfg: MergeDNAConfig, tokens: int, sp: int, k: Kernels) -> float:
    """The all-gathered [T, D] stream (T padded to a multiple of S) at a block boundary, per sample:
    transient, freed once the next consumer has read it. Nothing without sequence parallelism."""
    return 0.0 if sp == 1 else -(-tokens // sp) * sp * cfg.dim * k.nbytes


def rope_table_bytes(cfg: MergeDNAConfig, tokens: int) -> float:
    """cos and signed sin, [B, T, 1, head_dim] each (rope_angles), kept by apply_rope: one pair
    per module and pass, shared by its blocks (latent_encoder.block_on_pass; the encoder's anew
    after each merge)."""
    return tokens * 2 * cfg.head_dim * FP32


def attention_bytes(cfg: MergeDNAConfig, tokens: int, tp: int, local: bool, k: Kernels,
                    biased: bool = False) -> float:
    """`biased`: a full-attention block with pass 2's size-proportional key bias."""
    heads, width = cfg.n_heads / tp, cfg.dim / tp  # this rank's heads and their total width
    if not biased and (k.device == "gpu" or not local):
        # flash-attn, or CPU SDPA per row: q, k, v, out; the padded out (wo's input); lse
        return tokens * (5 * width * k.nbytes + heads * FP32)
    if not local:  # SDPA in the key-column form (flash-attn takes no bias; on the CPU per row)
        padded = heads * key_column_head_dim(cfg.head_dim)
        return tokens * ((4 * padded + width) * k.nbytes + heads * FP32)
    return tokens * 4 * width * k.nbytes  # blocked kernel: q, k, v; the output reshaped for wo


def block_bytes(cfg: MergeDNAConfig, tokens: int, tp: int, local: bool, k: Kernels,
                biased: bool = False) -> float:
    """One pre-norm block (RMSNorm, RoPE attention, SwiGLU) without checkpointing. Each norm's
    output is kept by the projections reading it; SwiGLU keeps gate, up, silu(gate) and the
    product (w2's input)."""
    norms = 2 * tokens * (norm_bytes(cfg, k) + cfg.dim * k.nbytes)
    ffn = tokens * 4 * (cfg.ffn_dim / tp) * k.nbytes
    return norms + attention_bytes(cfg, tokens, tp, local, k, biased) + ffn


def block_backward_working_bytes(cfg: MergeDNAConfig, tokens: int, tp: int, local: bool, k: Kernels) -> float:
    """What a block's backward allocates on top of the saved tensors it has not yet released:
    the gradient of the residual stream, plus the largest set of gradients produced together -
    SwiGLU's mul backward returns d(gate) and d(up) at once; the blocked CPU attention pads k and v
    (and q and the output gradient unless the tokens fill whole blocks) and accumulates dq, dk, dv
    into padded buffers; fused attention returns dq, dk, dv."""
    ffn = 2 * (cfg.ffn_dim / tp) * tokens
    if k.device == "cpu" and local:
        block = default_block(cfg.window, cfg.window)
        padded = -(-tokens // block) * block
        copies = 5 + (2 if padded != tokens else 0)
        attention = copies * (cfg.dim / tp) * (padded + 2 * cfg.window)
    else:
        attention = 3 * (cfg.dim / tp) * tokens
    return (tokens * cfg.dim + max(ffn, attention)) * k.nbytes


def local_merge_bytes(cfg: MergeDNAConfig, tokens_in: int, tokens_out: int, k: Kernels) -> float:
    """One TokenMerger + local_window_merge. The merge weights carry the straight-through gate's
    gradient, so the weighted constituents and the merged sums are kept (merge_step)."""
    scorer = tokens_in * (norm_bytes(cfg, k) + cfg.dim * k.nbytes  # the scorer's RMSNorm and Linear
                          + cfg.grouping_dim * (k.nbytes + FP32))  # grouping output, its fp32 unit vectors
    if cfg.rotary_merge:  # rotate_hidden's two tables over the whole width, and the rotated constituents
        constituents = tokens_in * 3 * cfg.dim * FP32
    else:  # the constituents themselves: the block output unless an fp32 copy had to be made
        constituents = 0 if k.nbytes == FP32 else tokens_in * cfg.dim * FP32
    merged_sums = tokens_out * cfg.dim * FP32  # the numerator of the size-weighted average
    return scorer + constituents + merged_sums


def rotation_bytes(cfg: MergeDNAConfig, tokens: int) -> float:
    """rotate_hidden's cos and signed sin over the whole width, kept when no gradient flows through
    the angle's weights (global merge, unmerge)."""
    return tokens * 2 * cfg.dim * FP32 if cfg.rotary_merge else 0


# ---------------------------------------------------------------------------------- the step
def step_sites(cfg: MergeDNAConfig, seq: int, tp: int, k: Kernels, sp: int = 1) -> list[Site]:
    """Every site of one sample's three passes, on one rank of a TP x SP layout: TP divides the
    full-attention blocks' heads and FFN width, SP the blocks' token width (block_tokens)."""
    t = token_counts(cfg, seq)
    N, L, K, D = t.bases, t.latent, t.latent_merged, cfg.dim
    sites: list[Site] = []

    def block(pass_name, module, stage_layer, tokens, local, input_already_held=False, biased=False):
        kind_tp = 1 if local else tp
        rank_tokens = block_tokens(cfg, tokens, sp, local)
        full = block_bytes(cfg, rank_tokens, kind_tp, local, k, biased)
        held = rank_tokens * D * k.nbytes  # the block's input: what checkpointing keeps
        if input_already_held and sp == 1:  # latent MTR starts from pass 1's detached tokens: same storage
            full, held = full - held, 0
        working = (block_backward_working_bytes(cfg, rank_tokens, kind_tp, local, k)
                   + gathered_stream_bytes(cfg, tokens, sp, k))
        sites.append(Site(pass_name, module, "blocks", stage_layer, full, held, working))

    def other(pass_name, module, stage_layer, nbytes, part="other"):
        sites.append(Site(pass_name, module, part, stage_layer, nbytes))

    def rope(pass_name, module, stage_layer, tokens, local):  # one pair of tables, sliced as the blocks
        other(pass_name, module, stage_layer, rope_table_bytes(cfg, block_tokens(cfg, tokens, sp, local)),
              part="blocks")

    for p in PASSES:
        full_pass = p != "latent MTR"
        if full_pass:  # Local Encoder: block then merge, per layer
            for T_in, T_out in zip(t.local_encoder[:-1], t.local_encoder[1:]):
                rope(p, "local_encoder", "local_encoder", T_in, local=True)
                block(p, "local_encoder", "local_encoder", T_in, local=True)
                other(p, "local_encoder", "local_encoder", local_merge_bytes(cfg, T_in, T_out, k))
        # Latent Encoder
        rope(p, "latent_encoder", "latent_encoder", L, local=False)
        merges = {} if full_pass else {m.point: m for m in t.latent_merges}
        width, merged = L, False
        for i in range(cfg.latent_encoder_layers):
            if i in merges:
                merged = True
                other(p, "latent_encoder", "latent_encoder",
                      sum(rotation_bytes(cfg, w) for w in merges[i].step_widths))
                width = merges[i].width
                rope(p, "latent_encoder", "latent_encoder", width, local=False)
            block(p, "latent_encoder", "latent_encoder", width, local=False,
                  input_already_held=(not full_pass and i == 0),
                  biased=merged and cfg.size_proportional_attention)
        if cfg.latent_encoder_layers in merges:  # the merge after the last block
            last = merges[cfg.latent_encoder_layers]
            other(p, "latent_encoder", "latent_norm", sum(rotation_bytes(cfg, w) for w in last.step_widths))
        top = L if full_pass else K
        other(p, "latent_encoder", "latent_norm", top * norm_bytes(cfg, k))  # final norm
        if not full_pass:  # unmerge K -> L: the gather keeps its source, rotate back by each offset
            other(p, "outside", "latent_norm", K * D * k.nbytes + rotation_bytes(cfg, L))
        # Latent Decoder
        rope(p, "latent_decoder", "latent_decoder", L, local=False)
        for _ in range(cfg.latent_decoder_layers):
            block(p, "latent_decoder", "latent_decoder", L, local=False)
        # Local Decoder: unmerge L -> N (gather source, rotation back), blocks, norm + head
        other(p, "local_decoder", "local_decoder", L * D * k.nbytes + rotation_bytes(cfg, N))
        rope(p, "local_decoder", "local_decoder", N, local=True)
        for _ in range(cfg.local_decoder_layers):
            block(p, "local_decoder", "local_decoder", N, local=True)
        other(p, "local_decoder", "local_decoder", N * (norm_bytes(cfg, k) + D * k.nbytes))
        # Losses: cross-entropy keeps the fp32 log-probabilities of the four bases
        other(p, "outside", "local_decoder", N * 4 * FP32)
    return sites


@dataclass(frozen=True)
class ActivationEstimate:
    saved: float  # bytes kept for backward when the forward pass ends
    transient: float  # the backward pass's peak on top of `saved`
    by_site: dict  # (pass, module, part) -> saved bytes

    @property
    def peak(self) -> float:
        return self.saved + self.transient


def activation_estimate(cfg: MergeDNAConfig, micro: int, seq: int, tp: int, k: Kernels, checkpoint: bool,
                        stage_share: dict[str, float] | None = None,
                        in_flight: int = 1, sp: int = 1) -> ActivationEstimate:
    """Activation memory of one rank. stage_share: the fraction of each pipeline layer kind held
    by this rank's stage (default: everything); in_flight: micro-batches whose activations the
    stage holds at once (1F1B: PP - stage); sp: sequence-parallel size (see the module docstring).

    Without checkpointing, the backward pass starts with every saved tensor alive and frees each
    as its node runs, so the peak is the saved total plus the working set of the first block.
    With checkpointing, each block's activations come back one block at a time: the peak adds
    the largest block's recomputed activations (less its input, already held) to its working set.
    """
    saved, transient, by_site = 0.0, 0.0, {}
    for s in step_sites(cfg, seq, tp, k, sp):
        weight = 1.0 if stage_share is None else stage_share.get(s.stage_layer, 0.0)
        if weight == 0:
            continue
        kept = s.checkpointed_nbytes if (checkpoint and s.checkpointed_nbytes is not None) else s.nbytes
        key = (s.pass_name, s.module, s.part)
        by_site[key] = by_site.get(key, 0.0) + weight * kept * micro * in_flight
        saved += weight * kept * micro * in_flight
        if s.checkpointed_nbytes is not None:
            recompute = s.nbytes - s.checkpointed_nbytes if checkpoint else 0.0
            transient = max(transient, (recompute + s.working_nbytes) * micro)
    return ActivationEstimate(saved, transient, by_site)
