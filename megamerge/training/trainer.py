"""The pre-training loop: a `Trainer` whose methods each do one thing, read top to bottom.

    Trainer(args)     check the flags, start the process groups, build the model and its DeepSpeed
                      engine, open the data, resume from --load
    .run()            until --train-iters or a stop:
                        train_step -> log_step -> (evaluate) -> stop? -> (save)
                      then save, and write exit_status.json for launchers

`train_step` is the one place that tells pipeline-parallel execution from plain execution. Every
random draw of the model is keyed by the global sample index and the learning rate is a pure
function of the iteration, so a resumed run (`resume`: counters, this rank's data position and
RNG states) reproduces the uninterrupted one step for step.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from megamerge import __version__
from megamerge.models.common.batch import Batch
from megamerge.models.common.keyed_random import sample_seeds
from megamerge.models.common.losses import softmask_base_weights
from megamerge.models.registry import family_of_preset
from megamerge.parallel import apply_tensor_parallel, initialize_model_parallel
from megamerge.parallel.sequence_parallel import apply_sequence_parallel, backward_scale
from megamerge.training import checkpointing, evaluation
from megamerge.training.activation_checkpointing import apply_activation_checkpointing
from megamerge.training.batches import TrainBatches, ValidBatches
from megamerge.training.compile import apply_compile
from megamerge.training.distributed import (
    all_gather_counts,
    all_reduce_mean,
    init_distributed,
    launched_world_size,
    share_cpu_cores,
)
from megamerge.training.ds_config import ConfigError, resolve_ds_config
from megamerge.training.engine import build_engine
from megamerge.training.grad_norms import group_grad_norms
from megamerge.training.input_checks import (
    START_OVER_FLAG,
    move_earlier_run_aside,
    refuse_bad_training_inputs,
)
from megamerge.training.lr_schedule import learning_rate
from megamerge.training.metrics import IntervalMeans, MetricsLogger, Progress
from megamerge.training.model_from_flags import check_parallel_layout, method_flag_names, model_config
from megamerge.training.peak_flops import peak_flops_per_device
from megamerge.training.run_state import RunState
from megamerge.training.signals import Stop, StopRequest

log = logging.getLogger("megamerge.train")


class TrainingStopped(RuntimeError):
    """The run cannot usefully go on (too many non-finite iterations in a row)."""


@dataclass(frozen=True)
class StepResult:
    losses: dict[str, float]  # this rank's means over the micro-batches: the family's loss and ratio keys
    lr: float
    grad_norm: float | None  # None when the optimizer skipped the step
    token_lengths: torch.Tensor | None  # last micro-batch's token lengths in bases (TensorBoard histogram)
    # The family's parameter-group gradient norms (training/grad_norms.py), on iterations that log;
    # None where not computable (pipeline stages, a skipped step).
    grad_norms: dict[str, float | None]


class Trainer:
    """One pre-training run: `Trainer(args).run()` (the module docstring gives the order of calls)."""

    def __init__(self, args):
        # --exit-duration-in-mins counts from here, start-up included (as Megatron)
        self.started = time.monotonic()
        self.args = args
        # Seconds of file reads instead of a traceback on every rank after DeepSpeed's start-up.
        refuse_bad_training_inputs(args, program="megamerge/train.py")
        if args.exit_duration_in_mins is not None and args.exit_duration_in_mins <= 0:
            raise ConfigError(f"--exit-duration-in-mins must be positive, got {args.exit_duration_in_mins}")
        world_size = launched_world_size()
        self.has_cuda = torch.cuda.is_available()
        # before any process group
        self.ds_config = resolve_ds_config(args.ds_config, args, world_size, self.has_cuda)
        self.cfg = model_config(args)
        check_parallel_layout(args, self.cfg, world_size)

        self.env = init_distributed(args.local_rank)
        self.rank0 = self.env.rank == 0
        share_cpu_cores()
        logging.basicConfig(level=logging.INFO if self.rank0 else logging.WARNING,
                            format="%(asctime)s megamerge %(levelname)s %(message)s")
        if args.start_over:
            self.start_over()
        self.parallel = initialize_model_parallel(args.tensor_model_parallel_size,
                                                  args.pipeline_model_parallel_size,
                                                  args.sequence_parallel_size)
        self.family = family_of_preset(args.model)  # its ModelSpec: what to log, how to evaluate, FLOPs
        self.logged_keys = (*self.family.loss_keys, *self.family.ratio_keys)
        model, self.total_parameters = self.build_model()
        built = build_engine(model, self.parallel, self.ds_config, self.env.device)
        self.engine, self.pipeline, self.eval_forward = built.engine, built.pipeline, built.eval_forward
        self.grad_norm_groups = self.tracked_grad_norm_groups(model)
        self.micro = self.ds_config["train_micro_batch_size_per_gpu"]
        self.accumulation = self.ds_config["gradient_accumulation_steps"]
        self.global_batch = self.ds_config["train_batch_size"]
        # every TP/PP/SP rank of one replica reads the same samples
        dp, dp_rank = self.parallel.dp, self.parallel.dp_rank
        self.train_batches = TrainBatches(args, self.micro, self.accumulation, dp, dp_rank)
        self.valid_batches = ValidBatches(args, self.micro, dp, dp_rank)
        self.state = self.resume() if args.load else RunState()

        self.logger = MetricsLogger(args.save, args.tensorboard_dir, enabled=self.rank0)
        if self.rank0:
            self.announce()
        self.stop = StopRequest(budget_minutes=args.exit_duration_in_mins, started=self.started)
        self.progress = Progress(args.train_iters, self.state.iteration, enabled=self.rank0)
        self.peak_flops = peak_flops_per_device(args.peak_tflops,
                                                torch.cuda.get_device_name() if self.has_cuda else None)
        self.inject_nan = set(args.inject_nan_at or [])  # fault injection for the NaN-guard test
        self.interval = IntervalMeans()

    # ------------------------------------------------------------------------------- set-up
    def build_model(self) -> tuple[torch.nn.Module, int]:
        """The full model, initialised alike on every rank, then cut to this rank's tensor-parallel
        shards. Returns it and its parameter count before the cut."""
        torch.manual_seed(self.args.seed)  # identical full master weights on every rank, then split
        model = self.family.model_class(self.cfg)
        total_parameters = model.parameter_counts()["total"]
        apply_tensor_parallel(model, self.parallel.tp_group)
        if self.args.compile:  # first: activation checkpointing then wraps the compiled forward
            apply_compile(model)
        if self.args.checkpoint_activations:
            apply_activation_checkpointing(model)
        # last: its slicing and all-gather stay outside what compilation and checkpointing wrap
        apply_sequence_parallel(model, self.parallel.sp_group)
        return model, total_parameters

    def tracked_grad_norm_groups(self, model: torch.nn.Module) -> dict[str, list[torch.nn.Parameter]]:
        """{metrics key: parameters} of the family's gradient-norm groups (MergeDNA's merge scorers
        and Local Encoder; none for CARMANIA). Under pipeline parallelism the engine runs backward and
        step in one call, so no gradient can be read between them: the keys are kept with no
        parameters and log null. Tensor parallelism replicates these (unsplit) parameters, and each
        TP rank holds their full gradient, so rank 0's norm is every rank's."""
        if self.family.grad_norm_groups is None:
            return {}
        groups = self.family.grad_norm_groups(model)
        return {key: [] for key in groups} if self.pipeline is not None else groups

    def start_over(self) -> None:
        """--start-over: rank 0 renames --save's earlier run before any rank reads or writes there."""
        if self.rank0 and self.args.save:
            aside = move_earlier_run_aside(self.args.save)
            if aside is not None:
                log.info("%s: moved the earlier run in %s aside to %s", START_OVER_FLAG, self.args.save,
                         aside)
        dist.barrier()

    def recorded_args(self) -> dict:
        return {k: v for k, v in vars(self.args).items() if k != "local_rank"}

    def announce(self) -> None:
        """Rank 0: the start-up line, and <save>/run_config.json (flags, model and DeepSpeed config)."""
        args = self.args
        log.info("model %s: %s parameters; global batch %d = micro %d x accumulation %d x dp %d; %s",
                 args.model, f"{self.total_parameters:,}", self.global_batch, self.micro, self.accumulation,
                 self.parallel.dp, "CPU (gloo)" if not self.has_cuda else "CUDA (nccl)")
        deviations = self.cfg.paper_deviations()
        log.info("departures from the %s paper: %s", self.family.name,
                 ", ".join(deviations) if deviations else "none (the paper's method)")
        if args.save:
            Path(args.save).mkdir(parents=True, exist_ok=True)
            (Path(args.save) / "run_config.json").write_text(json.dumps(
                {"args": self.recorded_args(), "family": self.family.name, "model_config": self.cfg.to_dict(),
                 "paper_deviations": self.cfg.paper_deviations(), "ds_config": self.ds_config,
                 "megamerge_version": __version__}, indent=2, default=str))

    # ------------------------------------------------------------------------ checkpoints
    def resume(self) -> RunState:
        """Load --load's published checkpoint into the engine. A full checkpoint also gives back
        the counters and this rank's data position and RNG states; a weights-only one (--finetune,
        or converted from a portable model) starts them afresh."""
        load_dir = self.args.load
        tag = checkpointing.latest_tag(load_dir)
        if tag is not None:  # before DeepSpeed's strict load, whose shape errors name no flag
            self.check_checkpoint_holds_this_model(tag, checkpointing.summary(load_dir, tag) or {})
        loaded = checkpointing.load(self.engine, load_dir, finetune=self.args.finetune)
        if loaded is None:
            log.info("no checkpoint in %s yet: starting from scratch", load_dir)
            return RunState()
        tag, saved = loaded
        self.check_checkpoint_holds_this_model(tag, saved)
        state = RunState()
        if not saved["weights_only"]:
            state = RunState.from_client_state(saved)
            rank_states = saved["rank_states"]
            if len(rank_states) != self.env.world_size:
                raise ConfigError(f"checkpoint {tag} was written by {len(rank_states)} ranks, this run has "
                                  f"{self.env.world_size}: exact resume of the data stream needs the same "
                                  "layout (use --finetune to load weights only)")
            self.train_batches.load_state_dict(rank_states[self.env.rank]["data"])
            checkpointing.set_rng_state(rank_states[self.env.rank]["rng"])
        log.info("resumed from %s/%s at iteration %d (%d samples consumed)", load_dir, tag, state.iteration,
                 state.consumed_samples)
        return state

    def check_checkpoint_holds_this_model(self, tag: str, saved: dict) -> None:
        saved_family, saved_cfg = saved.get("family"), saved.get("model_config")
        if saved_family and saved_family != self.family.name:
            raise ConfigError(f"checkpoint {self.args.load}/{tag} holds a {saved_family} model, but --model "
                              f"{self.args.model} is {self.family.name}")
        if saved_cfg and type(self.cfg).from_dict(saved_cfg) != self.cfg:
            saved_deviations = type(self.cfg).from_dict(saved_cfg).paper_deviations()
            raise ConfigError(f"checkpoint {self.args.load}/{tag} was trained with a different model config "
                              f"(its departures from the paper: {saved_deviations or 'none'}; train.py's "
                              f"{', '.join(method_flag_names(type(self.cfg)))} select them); "
                              f"saved {saved_cfg}")

    def save(self, reason: str) -> None:
        """A checkpoint of the engine, the run state and every rank's data position and RNG states
        (all ranks take part); nothing without --save."""
        if not self.args.save:
            return
        client_state = {
            **self.state.client_state(), "family": self.family.name, "model_config": self.cfg.to_dict(),
            "paper_deviations": self.cfg.paper_deviations(),
            "args": self.recorded_args(), "megamerge_version": __version__,
            "layout": {"tp": self.parallel.tp, "pp": self.parallel.pp, "dp": self.parallel.dp,
                       "sp": self.parallel.sp},
        }
        rank_state = {"data": self.train_batches.state_dict(), "rng": checkpointing.rng_state()}
        try:
            tag = checkpointing.save(self.engine, self.args.save, self.state.iteration, client_state,
                                     rank_state)
        except checkpointing.CheckpointSaveError as e:
            # Exit non-zero, so that a scheduler does not requeue into the same full disk. The other
            # ranks wait in DeepSpeed's collectives of this save: only the launcher (srun
            # --kill-on-bad-exit, deepspeed, torchrun) can end them, and a normal interpreter exit
            # could block on the process group, hence os._exit.
            print(f"megamerge/train.py: error: rank {self.env.rank}: {e}", file=sys.stderr, flush=True)
            os._exit(1)
        log.info("saved checkpoint %s/%s (%s)", self.args.save, tag, reason)

    # ------------------------------------------------------------------------- the loop
    def run(self) -> int:
        args = self.args
        self.interval.reset()
        while self.state.iteration < args.train_iters:
            self.log_step(self.train_step())
            stopping = self.stop.agreed(self.env.device)  # the same answer on every rank
            if self.evaluation_due(stopping):
                self.evaluate()
            reason = self.stop_reason(stopping)
            if reason is not None:
                return self.finish(reason)
            if self.state.iteration % args.save_interval == 0 and self.state.iteration < args.train_iters:
                self.save(f"--save-interval {args.save_interval}")
        return self.finish("finished")

    def micro_batch(self, iteration: int, micro_step: int) -> Batch:
        """This rank's micro-batch on its device, with --softmask-loss-weight's per-base weights."""
        ids, index, softmask = self.train_batches.next(iteration, micro_step)
        weights = softmask_base_weights(softmask, self.args.softmask_loss_weight)
        return Batch(ids, sample_seeds(self.args.seed, index), weights).to(self.env.device)

    def train_step(self) -> StepResult:
        """One optimizer step over `accumulation` micro-batches. DeepSpeed's ZeRO optimizer skips
        the update when the gradient is not finite; the iteration counts either way."""
        args, iteration = self.args, self.state.iteration
        lr = learning_rate(iteration, args.lr, args.min_lr, args.lr_warmup_iters, args.lr_decay_iters,
                           args.lr_decay_style)
        for group in self.engine.optimizer.param_groups:
            group["lr"] = lr
        poison = iteration in self.inject_nan
        token_lengths = None
        # Only an iteration that logs pays for the norms (an all-reduce per parameter under ZeRO-2).
        groups = self.grad_norm_groups if self.logs_at(iteration + 1) else {}
        norms = None  # [len(groups)] on the device
        group_norms = {}  # key -> float, read with the losses
        if self.pipeline is not None:  # the engine runs the micro-batches through the stages itself
            batches = [self.micro_batch(iteration, m) for m in range(self.accumulation)]
            out = self.pipeline.train_step(self.engine, batches, poison_loss=poison)
            losses = {key: out[key] for key in self.logged_keys}
        else:
            sums = None  # [len(logged_keys)] on the device: no host sync inside the micro-steps
            scale = backward_scale(self.parallel.sp)  # ZeRO sums gradients over sequence shards
            for m in range(self.accumulation):
                out = self.engine(self.micro_batch(iteration, m))
                self.engine.backward(out["loss"] * (float("nan") if poison else scale))
                if m == self.accumulation - 1 and any(groups.values()):
                    norms = group_grad_norms(groups)  # before step(), which frees the gradients
                self.engine.step()  # applies the update at the last micro-step only
                values = torch.stack([out[key].detach().float() for key in self.logged_keys])
                sums = values if sums is None else sums + values
                token_lengths = out.get("token_lengths")
            # The step's one sync of its own: the means (and any group norms) to the host, for the log line.
            means = sums / self.accumulation
            host = (means if norms is None else torch.cat([means, norms])).tolist()
            losses = dict(zip(self.logged_keys, host))
            group_norms = dict(zip(groups, host[len(self.logged_keys):]))
        applied = self.engine.was_step_applied()
        grad_norm = self.engine.get_global_grad_norm() if applied else None
        # null, like grad_norm, for a skipped (non-finite) step
        group_norms = {key: group_norms.get(key) if applied else None for key in groups}
        self.state.advance(self.global_batch, applied)
        if not applied:
            self.count_skipped_step()
        return StepResult(dict(losses), lr, None if grad_norm is None else float(grad_norm), token_lengths,
                          group_norms)

    def count_skipped_step(self) -> None:
        skips, limit = self.state.consecutive_skips, self.args.max_skipped_iters
        log.warning("iteration %d skipped: non-finite loss or gradient (%d in a row)", self.state.iteration,
                    skips)
        if skips >= limit:
            raise TrainingStopped(f"{skips} consecutive iterations had a non-finite loss or gradient "
                                  f"(--max-skipped-iters {limit}); stopping at iteration "
                                  f"{self.state.iteration}. Lower --lr or check the data.")

    def log_step(self, step: StepResult) -> None:
        """Average the step's losses over all ranks; every --log-interval iterations (and at the
        last) write their means since the previous line to metrics.jsonl, TensorBoard and stderr."""
        reduced = all_reduce_mean([step.losses.get(k, 0.0) for k in self.logged_keys], self.env.device)
        self.interval.add(dict(zip(self.logged_keys, reduced)))
        iteration, args = self.state.iteration, self.args
        if not self.logs_at(iteration):
            return
        samples_per_second = self.interval.iterations * self.global_batch / self.interval.seconds()
        means = self.interval.means()
        n = args.seq_length
        mfu = None
        if self.peak_flops:
            flops = self.family.flops_per_sequence(self.cfg, n, means) * samples_per_second
            mfu = flops / (self.peak_flops * self.env.world_size)
        record = {
            "iteration": iteration, "consumed_samples": self.state.consumed_samples,
            **{k: means[k] for k in self.family.loss_keys}, "lr": step.lr, "grad_norm": step.grad_norm,
            **self.grad_norm_record(step),
            **{k: means[k] for k in self.family.ratio_keys},
            "bases_per_second": samples_per_second * n, "samples_per_second": samples_per_second,
            "mfu": mfu, "skipped_iters": self.state.skipped_iters,
            "corrupt_shards": self.corrupt_shards_seen(),
            "samples_by_species": self.samples_by_species_seen(),
        }
        self.logger.log(record, step.token_lengths)
        self.progress.line(iteration, means["loss"], samples_per_second * n,
                           " ".join(f"{k} {means[k]:.3f}" for k in self.family.loss_keys[1:])
                           + "".join(f" | {means[k]:.2f} b/tok" for k in self.family.ratio_keys[:1]))
        self.interval.reset()

    def logs_at(self, iteration: int) -> bool:
        """Whether the step that ends at `iteration` writes a metrics line."""
        return iteration % self.args.log_interval == 0 or iteration == self.args.train_iters

    @staticmethod
    def grad_norm_record(step: StepResult) -> dict:
        """Each group norm of the logged step and its ratio to the whole model's `grad_norm` (all
        before clipping); null where either is."""
        record = {}
        for key, norm in step.grad_norms.items():
            record[key] = norm
            record[f"{key}_ratio"] = (None if norm is None or not step.grad_norm
                                      else norm / step.grad_norm)
        return record

    def corrupt_shards_seen(self) -> int:
        """Damaged shards met so far by any worker of any rank, each counted once: a data-parallel
        replica's tensor- and pipeline-parallel ranks read the same shards, and in a later epoch a
        shard can reach another worker or replica."""
        return len(all_gather_counts(dict.fromkeys(self.train_batches.corrupt_shard_names, 1)))

    def samples_by_species_seen(self) -> dict[str, int]:
        """Training samples drawn per species since the run began, over all data-parallel replicas
        (each counted once: its tensor-, pipeline- and sequence-parallel ranks read the same samples)."""
        replicas = self.parallel.tp * self.parallel.pp * self.parallel.sp
        return {species: count // replicas
                for species, count in all_gather_counts(self.train_batches.samples_by_species).items()}

    # ------------------------------------------------------------------ evaluate and stop
    def evaluation_due(self, stopping: Stop | None) -> bool:
        iteration = self.state.iteration
        return (iteration % self.args.eval_interval == 0 or iteration == self.args.train_iters
                or (stopping is not None and stopping.final_validation))

    def evaluate(self) -> None:
        result = evaluation.evaluate(self.engine, self.eval_forward, self.valid_batches, self.args.seed,
                                     self.env.device, self.family)
        if result is None:
            return
        self.logger.log({"iteration": self.state.iteration, "split": "valid",
                         "consumed_samples": self.state.consumed_samples, **result})
        if self.rank0:
            log.info("valid @ %d: loss %.4f | %s %.4f | perplexity %.3f", self.state.iteration,
                     result["loss"], self.family.eval_accuracy_name, result[self.family.eval_accuracy_name],
                     result["perplexity"])

    def stop_reason(self, stopping: Stop | None) -> str | None:
        """Why the run stops after this iteration (--exit-interval, a signal, --exit-duration-in-mins),
        or None to go on."""
        if self.args.exit_interval and self.state.iteration >= self.args.exit_interval:
            return f"--exit-interval {self.args.exit_interval}"
        return None if stopping is None else stopping.reason

    def finish(self, reason: str) -> int:
        """Save, close the logs and, on rank 0, write <save>/exit_status.json: both a finished run
        and a signalled one exit 0, and launchers (slurm/) read this file to decide whether to
        requeue."""
        self.save(reason)
        self.logger.close()
        if self.rank0:
            log.info("stopped at iteration %d: %s", self.state.iteration, reason)
            if self.args.save:
                status = {"iteration": self.state.iteration, "train_iters": self.args.train_iters,
                          "reason": reason, "finished": self.state.iteration >= self.args.train_iters,
                          "consumed_samples": self.state.consumed_samples}
                checkpointing.atomic_write(Path(self.args.save) / "exit_status.json",
                                           json.dumps(status) + "\n")
        dist.barrier()
        return 0
