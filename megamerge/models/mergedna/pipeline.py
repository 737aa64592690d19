"""MergeDNA as a DeepSpeed `PipelineModule`: the three-pass objective in one pipeline micro-batch.

Layers, in the order of MergeDNA's one list (pipeline_layers.py; DeepSpeed balances them over the
stages by parameter count), each kind run by one class here:

    LocalEncoderPipe | LatentEncoderBlockPipe x n_enc | LatentEncoderNormPipe |
    LatentDecoderBlockPipe x n_dec | LocalDecoderPipe (local decoder, head and the three losses)

One micro-batch carries all three passes side by side (`Carry`, sent as megamerge/parallel/carry.py
flattens it): pass 1 (MTR), pass 2 (latent MTR: starts at the first latent block from pass 1's
detached tokens and merges globally at each of `cfg.latent_merge_points`, so its merge state
crosses stage boundaries; unmerged after the latent norm) and pass 3 (AMTM on the masked input).
Every stage advances each pass with the functions the unsplit modules use: `latent_block_step`
(merge if due, RoPE, key bias, block) and, in the decoder, `block_on_pass`; the objective's pieces
come from objective.py, as in `MergeDNA.compute_losses`.

The AMTM mask is the catch: it is drawn from pass 2's latent merge map S', which is complete on
the stage holding the last merge point, but it is applied to the input on stage 0. Before each
`train_batch`, `stage_inputs` runs a no-grad preview of pass 2 for the step's micro-batches: stage
0 encodes the input, the stages up to the last merge point advance pass 2 only, with the same
steps (point-to-point sends carry it), the merge stage broadcasts S' over the pipeline group, and
stage 0 draws the mask with the function `MergeDNA.compute_losses` calls. The preview runs with
the weights the step will use and every op is deterministic, so the map equals the one the
training forward computes and PP > 1 gives the losses of PP = 1. Its price is one extra no-grad
forward of the Local Encoder and of the latent blocks below the last merge point; it holds no
activations.

Weights: the layers wrap the submodules of a full MergeDNA built with the run's seed (and split
by tensor parallelism first, if any), so any PP degree starts from PP = 1's weights.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.distributed as dist
from torch import nn

from megamerge.models.common.batch import Batch
from megamerge.models.mergedna.config import MergeDNAConfig
from megamerge.models.mergedna.latent_encoder import (
    LatentPass,
    block_on_pass,
    latent_block_step,
    merge_if_due,
)
from megamerge.models.mergedna.local_encoder import host_counts
from megamerge.models.mergedna.model import MergeDNA
from megamerge.models.mergedna.objective import (
    amtm_base_mask,
    mask_bases,
    objective_outputs,
    token_targets,
    unmerge_latent,
)
from megamerge.models.mergedna.pipeline_layers import (
    LATENT_DECODER_BLOCK,
    LATENT_ENCODER_BLOCK,
    LATENT_ENCODER_NORM,
    LOCAL_DECODER,
    LOCAL_ENCODER,
    PipelineLayer,
    latent_merge_layer_indices,
    pipeline_layers,
)
from megamerge.models.mergedna.token_merging import TokenState
from megamerge.parallel import carry
from megamerge.parallel.pipeline import PipelineDriver
from megamerge.vocabulary import check_input_ids

OUTPUT_KEYS = ("loss", "mtr", "latent_mtr", "amtm", "masked_correct", "masked_count", "bases_per_token",
               "latent_bases_per_token", "amtm_per_base")
COUNT_KEYS = ("masked_correct", "masked_count")  # summed by evaluation, not averaged by the engine


@dataclass
class StageInputs:
    """What stage 0 receives for one micro-batch."""

    batch: Batch
    base_mask: torch.Tensor  # [B, N] bool, AMTM's masked bases (from the preview)


@dataclass
class Carry:
    """What travels between stages."""

    input_ids: torch.Tensor  # [B, N] long
    base_mask: torch.Tensor  # [B, N] bool
    base_weights: torch.Tensor  # [B, N] float
    pass1: LatentPass  # MTR
    pass3: LatentPass  # AMTM
    pass2: LatentPass | None = None  # latent MTR, from the first latent block on
    latent_lengths: torch.Tensor | None = None  # [B] K_b, once pass 2 is unmerged

    @classmethod
    def received(cls, carried: tuple) -> Carry:
        """The carry a latent layer was handed, with every pass's host token counts."""
        c = carry.from_tuple(cls, carried)
        c.pass1, c.pass2, c.pass3 = with_host_counts(c.pass1, c.pass2, c.pass3)
        return c


def with_host_counts(*passes: LatentPass | None) -> list[LatentPass | None]:
    """`passes` with their host token counts. What another stage sent has none (derived state, not
    sent): they are read back at once, one host sync per stage and micro-batch, instead of one at
    every merge and attention call after it."""
    missing = [p for p in passes if p is not None and (p.state.counts is None or p.token_counts is None)]
    if not missing:
        return list(passes)
    sums = torch.stack([valid.sum(1) for p in missing for valid in (p.state.valid, p.token_valid)])
    rows = iter(sums.tolist())  # [2 x passes, B]: each pass's tokens, then the tokens it started from
    counted = {}
    for p in missing:
        counts, token_counts = tuple(next(rows)), tuple(next(rows))
        counted[id(p)] = replace(p, state=replace(p.state, counts=counts), token_counts=token_counts)
    return [counted.get(id(p), p) for p in passes]


def _normed(p: LatentPass, norm: nn.Module) -> LatentPass:
    return replace(p, state=replace(p.state, x=norm(p.state.x)))


class _PipeLayer(nn.Module):
    """Holds the submodule of the full model that `layer` names, under `layer.attribute`."""

    def __init__(self, model: MergeDNA, layer: PipelineLayer):
        super().__init__()
        self.cfg, self.index = model.cfg, layer.index
        self.add_module(layer.attribute, model.get_submodule(layer.submodule))


class LocalEncoderPipe(_PipeLayer):
    """Stage 0's layer: the tokenizer on the input (pass 1) and on the AMTM-masked input (pass 3)."""

    def _tokenize(self, input_ids: torch.Tensor, seeds: torch.Tensor,
                  base_mask: torch.Tensor | None = None) -> tuple[TokenState, TokenState | None]:
        """Pass 1's tokens, and pass 3's on the input with base_mask's bases masked (if given):
        merged to the same per-sample targets, sized on the host as MergeDNA.compute_losses does
        (the later stages, which receive the tokens through a carry, read merge widths from the
        device)."""
        base_valid = check_input_ids(input_ids)
        targets = token_targets(self.cfg, base_valid.sum(1), seeds, self.training)
        counts = host_counts(base_valid, targets)
        tokens = self.local_encoder(input_ids, targets, counts)
        if base_mask is None:
            return tokens, None
        return tokens, self.local_encoder(mask_bases(input_ids, base_mask), targets, counts)

    def forward(self, inputs: tuple) -> tuple:
        s = carry.from_tuple(StageInputs, inputs)
        tokens, masked = self._tokenize(s.batch.input_ids, s.batch.seeds, s.base_mask)
        return carry.to_tuple(Carry(s.batch.input_ids, s.base_mask, s.batch.base_weights,
                                    LatentPass.start(tokens), LatentPass.start(masked)))

    @torch.no_grad()
    def preview(self, input_ids: torch.Tensor, seeds: torch.Tensor) -> LatentPass:
        return LatentPass.start(self._tokenize(input_ids, seeds)[0])


class LatentEncoderBlockPipe(_PipeLayer):
    def forward(self, carried: tuple) -> tuple:
        cfg, c = self.cfg, Carry.received(carried)
        if c.pass2 is None:  # pass 2 runs on the frozen tokenizer output
            c.pass2 = LatentPass.start(c.pass1.state.detach())
        c.pass1 = latent_block_step(cfg, self.block, c.pass1, self.index, ())
        c.pass3 = latent_block_step(cfg, self.block, c.pass3, self.index, ())
        c.pass2 = latent_block_step(cfg, self.block, c.pass2, self.index, cfg.latent_merge_points)
        return carry.to_tuple(c)

    @torch.no_grad()
    def preview(self, p: LatentPass) -> tuple[LatentPass, bool]:
        """Pass 2 through this layer as forward runs it; True once S' is complete (the last merge)."""
        points = self.cfg.latent_merge_points
        if self.index == points[-1]:
            return merge_if_due(self.cfg, p, self.index, points), True
        return latent_block_step(self.cfg, self.block, p, self.index, points), False


class LatentEncoderNormPipe(_PipeLayer):
    """The latent encoder's final norm; then pass 2 is unmerged back to the L local tokens."""

    def forward(self, carried: tuple) -> tuple:
        cfg, c = self.cfg, Carry.received(carried)
        # after the last block
        pass2 = merge_if_due(cfg, c.pass2, cfg.latent_encoder_layers, cfg.latent_merge_points)
        merged = pass2.state  # [B, K, D]
        c.pass1, c.pass3 = _normed(c.pass1, self.norm), _normed(c.pass3, self.norm)
        back = unmerge_latent(cfg, self.norm(merged.x), merged.pos, pass2.latent_map,
                              c.pass1.state.pos)  # [B, L, D]
        c.pass2, c.latent_lengths = LatentPass.start(replace(c.pass1.state, x=back)), merged.lengths
        return carry.to_tuple(c)

    @torch.no_grad()
    def preview(self, p: LatentPass) -> tuple[LatentPass, bool]:
        """Reached only when the last merge point is after the last block."""
        n = self.cfg.latent_encoder_layers
        return merge_if_due(self.cfg, p, n, self.cfg.latent_merge_points), True


class LatentDecoderBlockPipe(_PipeLayer):
    def forward(self, carried: tuple) -> tuple:
        cfg, c = self.cfg, Carry.received(carried)
        # pass 2 decodes on the frozen tokens' frame; each pass keeps its RoPE tables from block
        # to block within the stage (passes 1 and 3 from the latent encoder's)
        for name in ("pass1", "pass2", "pass3"):
            setattr(c, name, block_on_pass(cfg, self.block, getattr(c, name)))
        return carry.to_tuple(c)


class LocalDecoderPipe(_PipeLayer):
    """Local decoder and head for the three passes, and the losses: a vector laid out as
    OUTPUT_KEYS whose entry 0 (the total loss) carries the gradient."""

    def forward(self, carried: tuple) -> torch.Tensor:
        c = carry.from_tuple(Carry, carried)
        base_valid = check_input_ids(c.input_ids)
        s1, s2, s3 = c.pass1.state, c.pass2.state, c.pass3.state
        logits = self.local_decoder(s1.x, s1.pos, s1.assign, base_valid)
        latent_logits = self.local_decoder(s2.x, s2.pos, s2.assign, base_valid)
        masked_logits = self.local_decoder(s3.x, s3.pos, s3.assign, base_valid)
        out = objective_outputs(self.cfg, c.input_ids, base_valid, logits, latent_logits, masked_logits,
                                c.base_mask, s1.lengths, c.latent_lengths, c.base_weights)
        stats = torch.stack([out[k].float() for k in OUTPUT_KEYS[1:]]).detach()
        return torch.cat([out["loss"].reshape(1), stats])


PIPE_CLASSES: dict[str, type[_PipeLayer]] = {
    LOCAL_ENCODER: LocalEncoderPipe,
    LATENT_ENCODER_BLOCK: LatentEncoderBlockPipe,
    LATENT_ENCODER_NORM: LatentEncoderNormPipe,
    LATENT_DECODER_BLOCK: LatentDecoderBlockPipe,
    LOCAL_DECODER: LocalDecoderPipe,
}


class MergeDNAPipeline(PipelineDriver):
    """MergeDNA's stages, and what the engine cannot do: the AMTM preview before each step."""

    output_keys = OUTPUT_KEYS
    reported_keys = tuple(k for k in OUTPUT_KEYS if k not in COUNT_KEYS)

    def __init__(self, model: MergeDNA, parallel):
        cfg: MergeDNAConfig = model.cfg
        self.cfg = cfg
        layers = pipeline_layers(cfg)
        super().__init__([(PIPE_CLASSES[layer.kind], (model, layer)) for layer in layers], parallel)
        last_merge_layer = latent_merge_layer_indices(cfg)[-1]  # where S' is complete
        parts = self.module.parts
        self.merge_stage = next(s for s in range(parallel.pp) if parts[s] <= last_merge_layer < parts[s + 1])

    def _preview_latent_map(self, input_ids: torch.Tensor, seeds: torch.Tensor, device):
        """This stage's share of pass 2's preview: (pass 1's tokens on stage 0, else None; S' [B, L]
        on the merge stage, else None)."""
        ranks, layers = self.parallel.pp_ranks, self.local_layers
        frozen, p = None, None
        if self.stage == 0:
            p = layers[0].preview(input_ids, seeds)
            frozen, layers = p.state, layers[1:]
        elif self.stage <= self.merge_stage:
            p = with_host_counts(carry.recv(LatentPass, ranks[self.stage - 1], device))[0]
        if self.stage > self.merge_stage:
            return frozen, None
        for layer in layers:
            p, done = layer.preview(p)
            if done:
                return frozen, p.latent_map
        carry.send(p, ranks[self.stage + 1])
        return frozen, None

    @torch.no_grad()
    def stage_inputs(self, batches: list[Batch], training: bool) -> list[tuple]:
        """Stage 0's input tuples (StageInputs) for these micro-batches, with their AMTM masks
        from the preview (placeholders on other stages).
        Collective over the pipeline group."""
        ranks = self.parallel.pp_ranks
        for m in self.local_layers:
            m.train(training)
        device = next(self.module.parameters()).device
        inputs = []
        for batch in batches:
            batch = batch.to(device)
            input_ids, seeds = batch.input_ids, batch.seeds
            frozen, latent_map = self._preview_latent_map(input_ids, seeds, device)
            # S' goes back from the merge stage to everyone in the pipeline group (stage 0 uses it).
            shape = torch.tensor(latent_map.shape if latent_map is not None else (0, 0), dtype=torch.long,
                                 device=device)
            dist.broadcast(shape, ranks[self.merge_stage], group=self.parallel.pp_group)
            if latent_map is None:
                latent_map = torch.empty(*shape.tolist(), dtype=torch.long, device=device)
            dist.broadcast(latent_map, ranks[self.merge_stage], group=self.parallel.pp_group)
            base_valid = check_input_ids(input_ids)
            mask = amtm_base_mask(self.cfg, frozen, latent_map, base_valid, seeds) if self.stage == 0 else \
                torch.zeros_like(base_valid)
            inputs.append(carry.to_tuple(StageInputs(batch, mask)))
        return inputs
