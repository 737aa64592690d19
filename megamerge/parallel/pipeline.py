"""MergeDNA as a DeepSpeed `PipelineModule`: the three-pass objective in one pipeline micro-batch.

Layers, in the order of MergeDNA's one list (megamerge/models/mergedna/pipeline_layers.py; DeepSpeed
balances them over the stages by parameter count), each kind run by one class here:

    LocalEncoderPipe | LatentEncoderBlockPipe x n_enc | LatentEncoderNormPipe |
    LatentDecoderBlockPipe x n_dec | LocalDecoderPipe (local decoder, head and the three losses)

One micro-batch carries all three passes side by side, as a tuple of tensors (the `Carry`):
stream 1 (MTR), stream 2 (latent MTR: starts at the first latent block from stream 1's
detached input, is merged globally at each of `cfg.latent_merge_points` - after every latent block
with the paper's per_block schedule, so the merge state (the composed map, merged positions and
sizes) crosses stage boundaries in the carry - and is unmerged after the latent norm) and
stream 3 (AMTM on the masked input). Every floating-point tensor in the carry has a gradient;
float metadata that has none (positions, sizes) travels bit-cast to int32, masks as uint8, so the
engine neither waits for gradients that never come nor needs its bool-tensor flag.

The AMTM mask is the catch: it is drawn from pass 2's latent merge map S', which is complete on
the stage holding the last merge point, but it is applied to the input on stage 0. Before each
`train_batch`, `amtm_masks` runs a no-grad preview of pass 2 for the step's micro-batches: stage
0 encodes the input, the stages up to the last merge point run the latent blocks below it on
stream 2 only, merging where the training forward merges (point-to-point sends carry the state
and the map so far), the merge stage broadcasts S' over the pipeline group, and stage 0 draws the
mask with the function `MergeDNA.compute_losses` calls. The preview runs with the weights the step
will use and every op is deterministic, so the map equals the one the training forward computes
and PP > 1 gives the losses of PP = 1. Its price is one extra no-grad forward of the Local Encoder
and of the latent blocks below the last merge point (every latent-encoder block with per_block,
half of them with single_layer's default); it holds no activations.

The objective itself (draws, merges, losses) is not here: every stage calls the pieces in
megamerge/models/mergedna/objective.py that `MergeDNA.compute_losses` calls too. What is here is
only about pipelining: the carry, the preview and the step driver.

Weights: the layers wrap the submodules of a full MergeDNA built with the run's seed (and split
by tensor parallelism first, if any), so any PP degree starts from PP = 1's weights. Building the
full model on every rank costs host memory once at start-up; at 7B use per-stage construction
from a converted checkpoint instead (README.md).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace

import torch
import torch.distributed as dist
from torch import nn

from megamerge.models.common.rope import rope_angles
from megamerge.models.mergedna.config import MergeDNAConfig
from megamerge.models.mergedna.model import MergeDNA
from megamerge.models.mergedna.objective import (
    amtm_base_mask,
    latent_key_bias,
    mask_bases,
    merge_latent,
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
from megamerge.models.registry import FAMILIES, family_of_config, family_of_model
from megamerge.vocabulary import check_input_ids

# Phases of stream 2 (latent MTR) in the carry.
NOT_STARTED, PRE_MERGE, MERGED, UNMERGED = 0, 1, 2, 3
OUTPUT_KEYS = ("loss", "mtr", "latent_mtr", "amtm", "masked_correct", "masked_count", "bases_per_token",
               "latent_bases_per_token", "amtm_per_base")


def pipeline_layer_count(cfg: MergeDNAConfig) -> int:
    return len(pipeline_layers(cfg))


def check_pipeline_stages(cfg, pp: int) -> None:
    """Whether `pp` pipeline stages can be cut from a model of config `cfg` (any family; the one
    check that training and the checkpoint converter make); ValueError says why not."""
    spec = family_of_config(cfg)
    if spec.pipeline_layers is None:
        if pp > 1:
            staged = " and ".join(s.model_class.__name__ for s in FAMILIES.values() if s.pipeline_layers)
            raise ValueError(f"pipeline parallelism {pp}: pipeline stages exist for {staged} only; a "
                             f"{type(cfg).__name__} model trains with data and tensor parallelism (use 1)")
        return
    n = len(spec.pipeline_layers(cfg))
    if pp > n:
        raise ValueError(f"{pp} pipeline stages exceed the {n} pipeline layers of this model "
                         f"(local encoder, {cfg.latent_encoder_layers} latent-encoder blocks, the latent norm, "
                         f"{cfg.latent_decoder_layers} latent-decoder blocks, local decoder)")


def _bits(t: torch.Tensor) -> torch.Tensor:  # float32 metadata -> int32 view, no gradient expected
    return t.float().contiguous().view(torch.int32)


def _unbits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.float32)


@dataclass
class Carry:
    """What travels between stages. Stream 2 reuses stream 1's metadata except while merged."""

    input_ids: torch.Tensor  # [B, N] long
    base_mask: torch.Tensor  # [B, N] bool, AMTM's masked bases
    base_weights: torch.Tensor  # [B, N] float, each base's loss weight (soft-masked repeats; all 1: unweighted)
    s1: TokenState  # pass 1 (MTR)
    s3: TokenState  # pass 3 (AMTM)
    phase: int = NOT_STARTED
    x2: torch.Tensor | None = None  # [B, L or T, D]
    pos2: torch.Tensor | None = None  # [B, T] merged positions (MERGED; T = K after the last merge)
    sizes2: torch.Tensor | None = None  # [B, T] bases per merged token (MERGED)
    valid2: torch.Tensor | None = None  # [B, T] (MERGED)
    latent_map: torch.Tensor | None = None  # [B, L] -> [0, T), the merges so far composed (MERGED)
    latent_lengths: torch.Tensor | None = None  # [B] K_b (MERGED, UNMERGED)

    @staticmethod
    def _state_tensors(s: TokenState) -> list[torch.Tensor]:
        return [s.x, _bits(s.pos), _bits(s.sizes), s.valid.to(torch.uint8), s.assign]

    @staticmethod
    def _state(t: tuple) -> TokenState:
        x, pos, sizes, valid, assign = t
        return TokenState(x=x, pos=_unbits(pos), sizes=_unbits(sizes), valid=valid.bool(), assign=assign)

    def to_tuple(self) -> tuple:
        out = [torch.tensor([self.phase]), self.input_ids, self.base_mask.to(torch.uint8), _bits(self.base_weights),
               *self._state_tensors(self.s1), *self._state_tensors(self.s3)]
        if self.phase == PRE_MERGE:
            out += [self.x2]
        elif self.phase == MERGED:
            out += [self.x2, _bits(self.pos2), _bits(self.sizes2), self.valid2.to(torch.uint8), self.latent_map,
                    self.latent_lengths]
        elif self.phase == UNMERGED:
            out += [self.x2, self.latent_lengths]
        return tuple(out)

    @classmethod
    def from_tuple(cls, t: tuple) -> Carry:
        phase = int(t[0][0])
        c = cls(input_ids=t[1], base_mask=t[2].bool(), base_weights=_unbits(t[3]), s1=cls._state(t[4:9]),
                s3=cls._state(t[9:14]), phase=phase)
        rest = t[14:]
        if phase == PRE_MERGE:
            (c.x2,) = rest
        elif phase == MERGED:
            c.x2, pos2, sizes2, valid2, c.latent_map, c.latent_lengths = rest
            c.pos2, c.sizes2, c.valid2 = _unbits(pos2), _unbits(sizes2), valid2.bool()
        elif phase == UNMERGED:
            c.x2, c.latent_lengths = rest
        return c


def _stream2_state(c: Carry) -> TokenState:
    """Stream 2 as the TokenState LatentEncoder holds at this point of pass 2."""
    if c.phase != MERGED:
        return replace(c.s1, x=c.x2)
    return TokenState(x=c.x2, pos=c.pos2, sizes=c.sizes2, valid=c.valid2, assign=c.latent_map.gather(1, c.s1.assign))


def _merge_stream2(cfg: MergeDNAConfig, c: Carry, point: int) -> None:
    merged, c.latent_map = merge_latent(cfg, _stream2_state(c), c.latent_map, c.s1.valid, point)
    c.x2, c.pos2, c.sizes2, c.valid2 = merged.x, merged.pos, merged.sizes, merged.valid
    c.latent_lengths, c.phase = merged.lengths, MERGED


def _stream2_rope_valid(cfg: MergeDNAConfig, c: Carry):
    if c.phase == MERGED:
        return rope_angles(c.pos2, cfg.head_dim, cfg.rope_theta), c.valid2
    return rope_angles(c.s1.pos, cfg.head_dim, cfg.rope_theta), c.s1.valid


def _stream2_key_bias(cfg: MergeDNAConfig, c: Carry) -> torch.Tensor | None:
    if c.phase == MERGED:  # the merged tokens attend size-proportionally (as LatentEncoder)
        return latent_key_bias(cfg, c.latent_map, c.s1.valid, c.x2.shape[1])
    return None


@dataclass
class PreviewPass2:
    """Pass 2 in the AMTM preview, as it travels between stages."""

    state: TokenState  # stream 2 now: [B, T, D]
    token_valid: torch.Tensor  # [B, L] bool, the frozen tokens pass 2 started from
    latent_map: torch.Tensor | None = None  # [B, L] -> [0, T), None before the first merge


class _PipeLayer(nn.Module):
    """Holds the submodule of the full model that `layer` names, under `layer.attribute`."""

    def __init__(self, model: MergeDNA, layer: PipelineLayer):
        super().__init__()
        self.cfg, self.index = model.cfg, layer.index
        self.add_module(layer.attribute, model.get_submodule(layer.submodule))


class LocalEncoderPipe(_PipeLayer):
    """Stage 0's layer: the tokenizer on the input (pass 1) and on the AMTM-masked input (pass 3)."""

    def _token_targets(self, input_ids: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        return token_targets(self.cfg, check_input_ids(input_ids).sum(1), seeds, self.training)

    def forward(self, inputs: tuple) -> tuple:
        input_ids, seeds, base_mask, base_weights = inputs
        targets = self._token_targets(input_ids, seeds)
        base_mask = base_mask.bool()
        c = Carry(input_ids=input_ids, base_mask=base_mask, base_weights=_unbits(base_weights),
                  s1=self.local_encoder(input_ids, targets), s3=self.local_encoder(mask_bases(input_ids, base_mask), targets))
        return c.to_tuple()

    @torch.no_grad()
    def preview(self, input_ids: torch.Tensor, seeds: torch.Tensor) -> TokenState:
        return self.local_encoder(input_ids, self._token_targets(input_ids, seeds))


class LatentEncoderBlockPipe(_PipeLayer):
    def forward(self, carry: tuple) -> tuple:
        cfg, c = self.cfg, Carry.from_tuple(carry)
        if c.phase == NOT_STARTED:  # pass 2 runs on the frozen tokenizer output
            c.x2, c.phase = c.s1.x.detach(), PRE_MERGE
        if self.index in cfg.latent_merge_points:
            _merge_stream2(cfg, c, self.index)
        rope1 = rope_angles(c.s1.pos, cfg.head_dim, cfg.rope_theta)
        rope3 = rope_angles(c.s3.pos, cfg.head_dim, cfg.rope_theta)
        c.s1 = replace(c.s1, x=self.block(c.s1.x, rope1, c.s1.valid))
        c.s3 = replace(c.s3, x=self.block(c.s3.x, rope3, c.s3.valid))
        c.x2 = self.block(c.x2, *_stream2_rope_valid(cfg, c), _stream2_key_bias(cfg, c))
        return c.to_tuple()

    @torch.no_grad()
    def preview(self, p: PreviewPass2) -> bool:
        """Stream 2 below the last merge point, as forward runs it; True once S' is complete."""
        cfg = self.cfg
        if self.index in cfg.latent_merge_points:
            p.state, p.latent_map = merge_latent(cfg, p.state, p.latent_map, p.token_valid, self.index)
            if self.index == cfg.latent_merge_points[-1]:
                return True
        key_bias = None if p.latent_map is None else latent_key_bias(cfg, p.latent_map, p.token_valid,
                                                                     p.state.x.shape[1])
        rope = rope_angles(p.state.pos, cfg.head_dim, cfg.rope_theta)
        p.state = replace(p.state, x=self.block(p.state.x, rope, p.state.valid, key_bias))
        return False


class LatentEncoderNormPipe(_PipeLayer):
    """The latent encoder's final norm; then pass 2 is unmerged back to the L local tokens."""

    def forward(self, carry: tuple) -> tuple:
        cfg, c = self.cfg, Carry.from_tuple(carry)
        if cfg.latent_encoder_layers in cfg.latent_merge_points:  # the merge after the last block
            _merge_stream2(cfg, c, cfg.latent_encoder_layers)
        c.s1 = replace(c.s1, x=self.norm(c.s1.x))
        c.s3 = replace(c.s3, x=self.norm(c.s3.x))
        c.x2 = unmerge_latent(cfg, self.norm(c.x2), c.pos2, c.latent_map, c.s1.pos)
        c.phase, c.pos2, c.sizes2, c.valid2, c.latent_map = UNMERGED, None, None, None, None
        return c.to_tuple()

    @torch.no_grad()
    def preview(self, p: PreviewPass2) -> bool:
        """Reached only when the last merge point is after the last block."""
        n = self.cfg.latent_encoder_layers
        p.state, p.latent_map = merge_latent(self.cfg, p.state, p.latent_map, p.token_valid, n)
        return True


class LatentDecoderBlockPipe(_PipeLayer):
    def forward(self, carry: tuple) -> tuple:
        cfg, c = self.cfg, Carry.from_tuple(carry)
        rope1 = rope_angles(c.s1.pos, cfg.head_dim, cfg.rope_theta)
        rope3 = rope_angles(c.s3.pos, cfg.head_dim, cfg.rope_theta)
        c.s1 = replace(c.s1, x=self.block(c.s1.x, rope1, c.s1.valid))
        c.x2 = self.block(c.x2, rope1, c.s1.valid)  # pass 2 decodes on the frozen tokens' frame
        c.s3 = replace(c.s3, x=self.block(c.s3.x, rope3, c.s3.valid))
        return c.to_tuple()


class LocalDecoderPipe(_PipeLayer):
    """Local decoder and head for the three streams, and the losses: a vector laid out as
    OUTPUT_KEYS whose entry 0 (the total loss) carries the gradient."""

    def forward(self, carry: tuple) -> torch.Tensor:
        c = Carry.from_tuple(carry)
        base_valid = check_input_ids(c.input_ids)
        decode = self.local_decoder
        logits = decode(c.s1.x, c.s1.pos, c.s1.assign, base_valid)
        latent_logits = decode(c.x2, c.s1.pos, c.s1.assign, base_valid)  # pass 2 on the frozen tokens' frame
        masked_logits = decode(c.s3.x, c.s3.pos, c.s3.assign, base_valid)
        weights = None if bool((c.base_weights == 1).all()) else c.base_weights  # all 1: the unweighted path
        out = objective_outputs(self.cfg, c.input_ids, base_valid, logits, latent_logits, masked_logits,
                                c.base_mask, c.s1.lengths, c.latent_lengths, weights)
        stats = torch.stack([out[k].float() for k in OUTPUT_KEYS[1:]]).detach()
        return torch.cat([out["loss"].reshape(1), stats])


PIPE_CLASSES: dict[str, type[_PipeLayer]] = {
    LOCAL_ENCODER: LocalEncoderPipe,
    LATENT_ENCODER_BLOCK: LatentEncoderBlockPipe,
    LATENT_ENCODER_NORM: LatentEncoderNormPipe,
    LATENT_DECODER_BLOCK: LatentDecoderBlockPipe,
    LOCAL_DECODER: LocalDecoderPipe,
}


class MergeDNAPipeline:
    """Builds the PipelineModule and drives what the engine cannot: the AMTM preview."""

    def __init__(self, model: MergeDNA, parallel):
        from deepspeed.pipe import LayerSpec
        from deepspeed.runtime.pipe.topology import PipeModelDataParallelTopology

        cfg = model.cfg
        self.cfg, self.parallel = cfg, parallel
        self.poison_loss = False
        specs = [LayerSpec(PIPE_CLASSES[layer.kind], model, layer)
                 for layer in family_of_model(model).pipeline_layers(cfg)]
        topology = PipeModelDataParallelTopology(num_pp=parallel.pp, num_mp=parallel.tp, num_dp=parallel.dp)
        self.module = _pipeline_module_class()(
            layers=specs, topology=topology, loss_fn=self._loss, partition_method="parameters", dynamic_shape=True,
        )
        grid = self.module._grid
        if grid.get_stage_id() != parallel.pp_rank or grid.pp_group != parallel.pp_ranks:
            raise RuntimeError("DeepSpeed's pipeline grid disagrees with megamerge's process groups "
                               f"(stage {grid.get_stage_id()} vs {parallel.pp_rank})")
        last_merge_layer = latent_merge_layer_indices(cfg)[-1]  # where S' is complete
        parts = self.module.parts
        self.merge_stage = next(s for s in range(parallel.pp) if parts[s] <= last_merge_layer < parts[s + 1])
        self.stage = parallel.pp_rank
        self.local_layers = list(self.module.forward_funcs)

    @property
    def is_last_stage(self) -> bool:
        return self.stage == self.parallel.pp - 1

    def _loss(self, outputs: torch.Tensor, labels) -> torch.Tensor:
        del labels  # everything the losses need travels in the carry
        self.module.last_outputs = outputs.detach()  # the components, read by get_additional_losses / eval
        return outputs[0] * float("nan") if self.poison_loss else outputs[0]

    # ----------------------------------------------------------------------- the AMTM preview
    def _send_preview(self, p: PreviewPass2, dst: int) -> None:
        s = p.state
        has_map = p.latent_map is not None
        header = torch.tensor([*s.x.shape, s.assign.shape[1], p.token_valid.shape[1], int(has_map)],
                              dtype=torch.long, device=s.x.device)
        dist.send(header, dst)
        tensors = [s.x.float().contiguous(), s.pos.float().contiguous(), s.sizes.float().contiguous(),
                   s.valid.to(torch.uint8), s.assign.contiguous(), p.token_valid.to(torch.uint8)]
        for t in tensors + ([p.latent_map.contiguous()] if has_map else []):
            dist.send(t, dst)

    def _recv_preview(self, src: int, dtype, device) -> PreviewPass2:
        header = torch.empty(6, dtype=torch.long, device=device)
        dist.recv(header, src)
        B, T, D, N, L, has_map = header.tolist()
        x, pos, sizes = (torch.empty(*shape, device=device) for shape in ((B, T, D), (B, T), (B, T)))
        valid, token_valid = (torch.empty(B, width, dtype=torch.uint8, device=device) for width in (T, L))
        assign = torch.empty(B, N, dtype=torch.long, device=device)
        latent_map = torch.empty(B, L, dtype=torch.long, device=device) if has_map else None
        for t in (x, pos, sizes, valid, assign, token_valid) + ((latent_map,) if has_map else ()):
            dist.recv(t, src)
        state = TokenState(x=x.to(dtype), pos=pos, sizes=sizes, valid=valid.bool(), assign=assign)
        return PreviewPass2(state, token_valid.bool(), latent_map)

    def _preview_latent_map(self, input_ids: torch.Tensor, seeds: torch.Tensor, dtype, device):
        """This stage's share of pass 2's preview: (pass 1's tokens on stage 0, else None; S' [B, L]
        on the merge stage, else None)."""
        ranks, modules = self.parallel.pp_ranks, self.local_layers
        frozen, p, rest = None, None, modules
        if self.stage == 0:
            frozen = modules[0].preview(input_ids, seeds)
            p, rest = PreviewPass2(frozen, frozen.valid), modules[1:]
        elif self.stage <= self.merge_stage:
            p = self._recv_preview(ranks[self.stage - 1], dtype, device)
        if self.stage > self.merge_stage:
            return frozen, None
        done = False
        for m in rest:
            if m.preview(p):
                done = True
                break
        if not done:
            self._send_preview(p, ranks[self.stage + 1])
        return frozen, p.latent_map if done else None

    @torch.no_grad()
    def amtm_masks(self, batches: list[tuple[torch.Tensor, ...]], training: bool) -> list[torch.Tensor]:
        """The AMTM base masks [B, N] for these (input_ids, seeds[, base_weights]) micro-batches, on
        stage 0 (an empty list elsewhere). Collective over the pipeline group."""
        ranks = self.parallel.pp_ranks
        for m in self.local_layers:
            m.train(training)
        param = next(self.module.parameters())
        dtype, device = param.dtype, param.device
        masks = []
        for input_ids, seeds, *_ in batches:
            input_ids, seeds = input_ids.to(device), seeds.to(device)
            frozen, latent_map = self._preview_latent_map(input_ids, seeds, dtype, device)
            # S' goes back from the merge stage to everyone in the pipeline group (stage 0 uses it).
            shape = torch.tensor(latent_map.shape if latent_map is not None else (0, 0), dtype=torch.long,
                                 device=device)
            dist.broadcast(shape, ranks[self.merge_stage], group=self.parallel.pp_group)
            if latent_map is None:
                latent_map = torch.empty(*shape.tolist(), dtype=torch.long, device=device)
            dist.broadcast(latent_map, ranks[self.merge_stage], group=self.parallel.pp_group)
            if self.stage == 0:
                masks.append(amtm_base_mask(self.cfg, frozen, latent_map, check_input_ids(input_ids), seeds))
        return masks

    # ----------------------------------------------------------------------- steps
    def _iterator(self, batches, masks):
        for m, (ids, seeds, *weights) in enumerate(batches):
            mask = masks[m] if masks else torch.zeros_like(ids, dtype=torch.uint8)
            base_weights = weights[0] if weights and weights[0] is not None else torch.ones(ids.shape)
            yield (ids, seeds, mask.to(torch.uint8), _bits(base_weights.to(ids.device))), torch.zeros(1)

    def train_step(self, engine, batches, poison_loss: bool = False) -> dict[str, float]:
        """One optimizer step over `batches`, (input_ids, seeds[, base_weights]) each (one per
        gradient-accumulation micro-step; base_weights as compute_losses takes them). Returns
        the micro-batch-averaged, data-parallel-averaged losses on every rank. `poison_loss`
        makes the backward start from NaN (fault injection for the NaN guard's test); the
        reported losses stay finite, as in the unsplit path."""
        masks = self.amtm_masks(batches, training=True)
        self.poison_loss = poison_loss
        try:
            engine.train_batch(data_iter=self._iterator(batches, masks))
        finally:
            self.poison_loss = False
        values = engine.agg_additional_losses
        return {k: float(v) for k, v in values.items()}

    def eval_step(self, engine, ids, seeds) -> torch.Tensor:
        """OUTPUT_KEYS for one micro-batch, on every rank of the pipeline group."""
        masks = self.amtm_masks([(ids, seeds)], training=False)
        engine.eval_batch(self._iterator([(ids, seeds)], masks), num_micro_batches=1, compute_loss=True,
                          bcast_loss=False, reduce_output=None)
        device = next(self.module.parameters()).device
        out = self.module.last_outputs.clone() if self.is_last_stage else torch.zeros(len(OUTPUT_KEYS), device=device)
        dist.broadcast(out, self.parallel.pp_ranks[-1], group=self.parallel.pp_group)
        return out


def _pipeline_module_class():
    from deepspeed.pipe import PipelineModule  # imported late: config checks must not pay for deepspeed

    class MergeDNAPipelineModule(PipelineModule):
        """Reports the loss components as DeepSpeed "additional losses": train_batch averages them
        over micro-batches and data-parallel ranks and broadcasts them to every stage."""

        last_outputs: torch.Tensor | None = None

        def get_additional_losses(self):
            keys = [k for k in OUTPUT_KEYS if k not in ("masked_correct", "masked_count")]
            if self.last_outputs is None:  # not the last stage: only the count matters
                return OrderedDict((k, torch.zeros(())) for k in keys)
            return OrderedDict((k, self.last_outputs[OUTPUT_KEYS.index(k)].clone()) for k in keys)

    return MergeDNAPipelineModule
