"""Pipeline parallelism for any model family that has pipeline stages (its spec's `pipeline`):
the stage-count check, and `PipelineDriver`, which builds the family's DeepSpeed `PipelineModule`
from its layers and drives a step through it.

A family subclasses `PipelineDriver` beside its model (MergeDNA: models/mergedna/pipeline.py),
naming the layers and how stage 0's inputs are made (`stage_inputs`, which may be collective over
the pipeline group, as MergeDNA's AMTM preview is). The last stage returns a vector laid out as
`output_keys`, entry 0 the loss; the engine averages `reported_keys` over micro-batches and
data-parallel ranks (DeepSpeed's "additional losses") and broadcasts them to every stage.
Between stages the layers pass carries (megamerge/parallel/carry.py).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.distributed as dist

from megamerge.models.common.batch import Batch
from megamerge.models.registry import FAMILIES, family_of_config


def pipeline_layer_count(cfg) -> int:
    return len(family_of_config(cfg).pipeline_layers(cfg))


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
    layers = spec.pipeline_layers(cfg)
    if pp > len(layers):
        kinds = ", ".join(dict.fromkeys(layer.kind for layer in layers))
        raise ValueError(f"{pp} pipeline stages exceed the {len(layers)} pipeline layers of this model "
                         f"(one stage holds at least one layer; the layers: {kinds})")


class PipelineDriver:
    """A family's stages as a DeepSpeed `PipelineModule`, and the step driver around it."""

    output_keys: tuple[str, ...] = ("loss",)  # the last stage's output vector
    reported_keys: tuple[str, ...] = ("loss",)  # the entries train_step returns (engine-averaged)

    def __init__(self, layers: list[tuple[type, tuple]], parallel):
        """`layers`: (layer class, its constructor arguments) in order; DeepSpeed builds only this
        stage's and balances them over the stages by parameter count."""
        from deepspeed.pipe import LayerSpec
        from deepspeed.runtime.pipe.topology import PipeModelDataParallelTopology

        self.parallel = parallel
        self.poison_loss = False
        topology = PipeModelDataParallelTopology(num_pp=parallel.pp, num_mp=parallel.tp, num_dp=parallel.dp)
        self.module = _pipeline_module_class(self.output_keys, self.reported_keys)(
            layers=[LayerSpec(cls, *args) for cls, args in layers], topology=topology, loss_fn=self._loss,
            partition_method="parameters", dynamic_shape=True,
        )
        grid = self.module._grid
        if grid.get_stage_id() != parallel.pp_rank or grid.pp_group != parallel.pp_ranks:
            raise RuntimeError("DeepSpeed's pipeline grid disagrees with megamerge's process groups "
                               f"(stage {grid.get_stage_id()} vs {parallel.pp_rank})")
        self.stage = parallel.pp_rank
        self.local_layers = list(self.module.forward_funcs)

    @property
    def is_last_stage(self) -> bool:
        return self.stage == self.parallel.pp - 1

    def stage_inputs(self, batches: list[Batch], training: bool) -> list[tuple]:
        """Stage 0's input tuple for each micro-batch (any tuple elsewhere); collective over the
        pipeline group where the family needs it."""
        raise NotImplementedError

    def _loss(self, outputs: torch.Tensor, labels) -> torch.Tensor:
        del labels  # everything the losses need travels in the carry
        self.module.last_outputs = outputs.detach()  # the components, read by get_additional_losses / eval
        return outputs[0] * float("nan") if self.poison_loss else outputs[0]

    def _iterator(self, inputs: list[tuple]):
        for stage_input in inputs:
            yield stage_input, torch.zeros(1)

    def train_step(self, engine, batches: list[Batch], poison_loss: bool = False) -> dict[str, float]:
        """One optimizer step over `batches` (one per gradient-accumulation micro-step). Returns the
        micro-batch- and data-parallel-averaged `reported_keys` on every rank. `poison_loss` makes
        the backward start from NaN (fault injection for the NaN guard's test); the reported losses
        stay finite."""
        inputs = self.stage_inputs(batches, training=True)
        self.poison_loss = poison_loss
        try:
            engine.train_batch(data_iter=self._iterator(inputs))
        finally:
            self.poison_loss = False
        return {k: float(v) for k, v in engine.agg_additional_losses.items()}

    def eval_step(self, engine, batch: Batch) -> torch.Tensor:
        """`output_keys` for one micro-batch, on every rank of the pipeline group."""
        inputs = self.stage_inputs([batch], training=False)
        engine.eval_batch(self._iterator(inputs), num_micro_batches=1, compute_loss=True, bcast_loss=False,
                          reduce_output=None)
        device = next(self.module.parameters()).device
        out = self.module.last_outputs.clone() if self.is_last_stage else \
            torch.zeros(len(self.output_keys), device=device)
        dist.broadcast(out, self.parallel.pp_ranks[-1], group=self.parallel.pp_group)
        return out


def _pipeline_module_class(output_keys: tuple[str, ...], reported_keys: tuple[str, ...]):
    from deepspeed.pipe import PipelineModule  # imported late: config checks must not pay for deepspeed

    class ReportingPipelineModule(PipelineModule):
        """Reports the loss components as DeepSpeed "additional losses": train_batch averages them
        over micro-batches and data-parallel ranks and broadcasts them to every stage."""

        last_outputs: torch.Tensor | None = None

        def get_additional_losses(self):
            if self.last_outputs is None:  # not the last stage: only the count matters
                return OrderedDict((k, torch.zeros(())) for k in reported_keys)
            return OrderedDict((k, self.last_outputs[output_keys.index(k)].clone()) for k in reported_keys)

    return ReportingPipelineModule
