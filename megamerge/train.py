"""Pre-train MergeDNA (or CARMANIA, `--model carmania-*`) with DeepSpeed.

    deepspeed megamerge/train.py --ds_config ds_configs/zero2.json --model 380m --data DIR --save CKPT
    torchrun --nproc-per-node 8 megamerge/train.py ...        srun megamerge/train.py ...  (rank from env)

Each iteration runs `accumulation` micro-steps of the three-pass MergeDNA objective, then one
optimizer step (DeepSpeed ZeRO). The learning rate is a pure function of the iteration; every
random draw of the model is keyed by the global sample index; the data loader's position is
checkpointed. Together these make `--load` resume bit-for-bit. SIGTERM / SIGUSR1 save a
checkpoint and exit 0 (SLURM requeue builds on this).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

if __package__ in (None, ""):  # run as a script: `deepspeed megamerge/train.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.distributed as dist

from megamerge import __version__
from megamerge.models.common.keyed_random import sample_seeds
from megamerge.models.mergedna.flops import peak_flops_per_device
from megamerge.models.registry import config_from_preset, family_of_preset
from megamerge.parallel import (
    ModelParallelUnit,
    apply_tensor_parallel,
    check_tensor_parallel_sizes,
    initialize_model_parallel,
)
from megamerge.parallel.pipeline import OUTPUT_KEYS as PIPELINE_OUTPUT_KEYS
from megamerge.parallel.pipeline import MergeDNAPipeline, check_pipeline_layout
from megamerge.parallel.process_groups import check_layout
from megamerge.training import checkpointing
from megamerge.training.activation_checkpointing import apply_activation_checkpointing
from megamerge.training.arguments import MODEL_DIM_FLAGS, parse_args
from megamerge.training.batches import TrainBatches, ValidBatches
from megamerge.training.distributed import init_distributed
from megamerge.training.ds_config import ConfigError, resolve_ds_config
from megamerge.training.families import SPECS, TrainingSpec
from megamerge.training.lr_schedule import learning_rate
from megamerge.training.metrics import MetricsLogger, Progress
from megamerge.training.objective import PretrainingObjective
from megamerge.training.signals import StopRequest

log = logging.getLogger("megamerge.train")


class TrainingStopped(RuntimeError):
    pass


def model_config(args):
    """The preset's config (either family) with the flags that apply to it."""
    family = family_of_preset(args.model)
    fields = {f.name for f in dataclasses.fields(family.config_class)}
    overrides = {}
    for flag, field in MODEL_DIM_FLAGS.items():
        value = getattr(args, flag)
        if value is None:
            continue
        if field not in fields:
            raise ConfigError(f"--{flag.replace('_', '-')} does not apply to {family.name} models ({args.model})")
        overrides[field] = value
    if family.name == "mergedna":
        overrides.update(latent_mtr_weight=args.latent_mtr_weight, compression_range=tuple(args.compression_range))
    if args.tm_weight is not None:
        overrides["tm_weight"] = args.tm_weight
    return config_from_preset(args.model, **overrides)


def check_parallel_layout(args, cfg, world_size: int) -> None:
    """Everything that would otherwise hang or assert inside a process group, checked first."""
    tp, pp = args.tensor_model_parallel_size, args.pipeline_model_parallel_size
    try:
        check_pipeline_layout(cfg, pp)
        check_layout(world_size, tp, pp)
        check_tensor_parallel_sizes(cfg.n_heads, cfg.ffn_dim, tp, getattr(cfg, "n_kv_heads", None))
    except ValueError as e:
        raise ConfigError(str(e)) from None


def all_reduce_mean(values: list[float], device) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return (t / dist.get_world_size()).tolist()


def all_reduce_sum(values: list[float], device) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


@torch.no_grad()
def evaluate(engine, valid: ValidBatches, args, device, spec: TrainingSpec, pipeline=None) -> dict | None:
    if not valid.available:
        return None
    engine.eval()
    sums = defaultdict(float)
    for ids, index in valid:
        if pipeline is not None:
            out = dict(zip(PIPELINE_OUTPUT_KEYS, pipeline.eval_step(engine, ids.to(device),
                                                                    sample_seeds(args.seed, index).to(device))))
        else:
            out = engine(ids.to(device), sample_seeds(args.seed, index).to(device))
        n = float(ids.shape[0])
        for key in spec.loss_keys:
            sums[key] += float(out[key]) * n
        sums["samples"] += n
        sums["correct"] += float(out[spec.eval_correct])
        sums["scored"] += float(out[spec.eval_count])
        sums["nats"] += float(out[spec.eval_loss]) * float(out[spec.eval_count])
    engine.train()
    keys = [*spec.loss_keys, "samples", "correct", "scored", "nats"]
    totals = dict(zip(keys, all_reduce_sum([sums[k] for k in keys], device)))
    if totals["samples"] == 0:
        return None
    result = {key: totals[key] / totals["samples"] for key in spec.loss_keys}
    result[spec.eval_accuracy_name] = totals["correct"] / max(totals["scored"], 1.0)
    # Perplexity per scored base (MergeDNA: the masked bases; CARMANIA: every next base).
    result["perplexity"] = math.exp(totals["nats"] / max(totals["scored"], 1.0))
    return result


def train(args) -> int:
    started = time.monotonic()  # --exit-duration-in-mins counts from here, start-up included (as Megatron)
    if args.exit_duration_in_mins is not None and args.exit_duration_in_mins <= 0:
        raise ConfigError(f"--exit-duration-in-mins must be positive, got {args.exit_duration_in_mins}")
    world_size = int(os.environ.get("WORLD_SIZE", os.environ.get("SLURM_NTASKS", "1")))
    has_cuda = torch.cuda.is_available()
    ds_config = resolve_ds_config(args.ds_config, args, world_size, has_cuda)  # fail before any process group
    cfg = model_config(args)
    check_parallel_layout(args, cfg, world_size)

    env = init_distributed(args.local_rank)
    rank0 = env.rank == 0
    if not has_cuda and "OMP_NUM_THREADS" not in os.environ:
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("SLURM_NTASKS_PER_NODE", "1")))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, local_world)))
    logging.basicConfig(level=logging.INFO if rank0 else logging.WARNING,
                        format="%(asctime)s megamerge %(levelname)s %(message)s")

    parallel = initialize_model_parallel(args.tensor_model_parallel_size, args.pipeline_model_parallel_size)
    torch.manual_seed(args.seed)  # identical full master weights on every rank, then split
    family = family_of_preset(args.model)
    spec = SPECS[family.name]
    model = family.model_class(cfg)
    total_parameters = model.parameter_counts()["total"]  # before tensor parallelism shards it
    apply_tensor_parallel(model, parallel.tp_group)
    if args.checkpoint_activations:
        apply_activation_checkpointing(model)
    import deepspeed

    pipeline = None
    if parallel.pp > 1:
        # TP shards travel whole between stages (no pipe/grad partitioning over the TP group).
        ds_config.setdefault("pipeline", {}).update(pipe_partitioned=False, grad_partitioned=False)
        pipeline = MergeDNAPipeline(model, parallel)  # the engine moves only this stage's layers to the device
        engine, _, _, _ = deepspeed.initialize(model=pipeline.module, config=ds_config,
                                               model_parameters=[p for p in pipeline.module.parameters()])
    else:
        engine, _, _, _ = deepspeed.initialize(model=PretrainingObjective(model).to(env.device),
                                               model_parameters=model.parameters(), config=ds_config,
                                               mpu=ModelParallelUnit(parallel))
    micro = ds_config["train_micro_batch_size_per_gpu"]
    accumulation = ds_config["gradient_accumulation_steps"]
    global_batch = ds_config["train_batch_size"]
    dp, dp_rank = parallel.dp, parallel.dp_rank  # every TP/PP rank of one replica reads the same samples

    train_batches = TrainBatches(args, micro, accumulation, dp, dp_rank)
    valid_batches = ValidBatches(args, micro, dp, dp_rank)
    iteration, consumed, skipped_total = 0, 0, 0

    def check_holds_this_model(tag: str, saved: dict) -> None:
        saved_family, saved_cfg = saved.get("family"), saved.get("model_config")
        if saved_family and saved_family != family.name:
            raise ConfigError(f"checkpoint {args.load}/{tag} holds a {saved_family} model, but --model {args.model} "
                              f"is {family.name}")
        if saved_cfg and type(cfg).from_dict(saved_cfg) != cfg:
            raise ConfigError(f"checkpoint {args.load}/{tag} was trained with a different model config; "
                              f"saved {saved_cfg}")

    if args.load:
        tag = checkpointing.latest_tag(args.load)
        if tag is not None:  # before DeepSpeed's strict load, whose shape errors name no flag
            check_holds_this_model(tag, checkpointing.summary(args.load, tag) or {})
        loaded = checkpointing.load(engine, args.load, finetune=args.finetune)
        if loaded is None:
            log.info("no checkpoint in %s yet: starting from scratch", args.load)
        else:
            tag, state = loaded
            check_holds_this_model(tag, state)
            if not state["weights_only"]:
                iteration = int(state["iteration"])
                consumed = int(state["consumed_samples"])
                skipped_total = int(state.get("skipped_iters", 0))
                rank_states = state["rank_states"]
                if len(rank_states) != env.world_size:
                    raise ConfigError(f"checkpoint {tag} was written by {len(rank_states)} ranks, this run has "
                                      f"{env.world_size}: exact resume of the data stream needs the same layout "
                                      "(use --finetune to load weights only)")
                train_batches.load_state_dict(rank_states[env.rank]["data"])
                checkpointing.set_rng_state(rank_states[env.rank]["rng"])
            log.info("resumed from %s/%s at iteration %d (%d samples consumed)", args.load, tag, iteration, consumed)

    def save(reason: str) -> None:
        if not args.save:
            return
        client_state = {
            "iteration": iteration, "consumed_samples": consumed, "skipped_iters": skipped_total,
            "family": family.name, "model_config": cfg.to_dict(),
            "args": {k: v for k, v in vars(args).items() if k != "local_rank"}, "megamerge_version": __version__,
            "layout": {"tp": args.tensor_model_parallel_size, "pp": args.pipeline_model_parallel_size, "dp": dp},
        }
        rank_state = {"data": train_batches.state_dict(), "rng": checkpointing.rng_state()}
        tag = checkpointing.save(engine, args.save, iteration, client_state, rank_state)
        log.info("saved checkpoint %s/%s (%s)", args.save, tag, reason)

    logger = MetricsLogger(args.save, args.tensorboard_dir, enabled=rank0)
    if rank0:
        log.info("model %s: %s parameters; global batch %d = micro %d x accumulation %d x dp %d; %s",
                 args.model, f"{total_parameters:,}", global_batch, micro, accumulation, dp,
                 "CPU (gloo)" if not has_cuda else "CUDA (nccl)")
        if args.save:
            Path(args.save).mkdir(parents=True, exist_ok=True)
            (Path(args.save) / "run_config.json").write_text(json.dumps(
                {"args": {k: v for k, v in vars(args).items() if k != "local_rank"}, "family": family.name,
                 "model_config": cfg.to_dict(),
                 "ds_config": ds_config, "megamerge_version": __version__}, indent=2, default=str))
    stop = StopRequest(budget_minutes=args.exit_duration_in_mins, started=started)
    progress = Progress(args.train_iters, iteration, enabled=rank0)
    peak = peak_flops_per_device(args.peak_tflops, torch.cuda.get_device_name() if has_cuda else None)
    inject_nan = set(args.inject_nan_at or [])

    interval = defaultdict(float)
    interval_iters, interval_start = 0, time.time()
    consecutive_skips = 0
    exit_reason = "finished"
    while iteration < args.train_iters:
        lr = learning_rate(iteration, args.lr, args.min_lr, args.lr_warmup_iters, args.lr_decay_iters,
                           args.lr_decay_style)
        for group in engine.optimizer.param_groups:
            group["lr"] = lr
        step = defaultdict(float)
        token_lengths = None
        if pipeline is not None:
            batches = [train_batches.next(iteration, m) for m in range(accumulation)]
            out = pipeline.train_step(engine, [(ids.to(env.device), sample_seeds(args.seed, index).to(env.device))
                                               for ids, index in batches], poison_loss=iteration in inject_nan)
            for key in (*spec.loss_keys, *spec.ratio_keys):
                step[key] = out[key]
        for m in range(accumulation if pipeline is None else 0):
            ids, index = train_batches.next(iteration, m)
            out = engine(ids.to(env.device), sample_seeds(args.seed, index).to(env.device))
            loss = out["loss"]
            if iteration in inject_nan:  # fault injection for the NaN-guard test
                loss = loss * float("nan")
            engine.backward(loss)
            engine.step()
            for key in spec.loss_keys:
                step[key] += float(out[key].detach()) / accumulation
            for key in spec.ratio_keys:
                step[key] += out[key] / accumulation
            token_lengths = out.get("token_lengths")
        applied = engine.was_step_applied()
        grad_norm = engine.get_global_grad_norm() if applied else None
        iteration += 1
        consumed += global_batch
        if applied:
            consecutive_skips = 0
        else:
            skipped_total += 1
            consecutive_skips += 1
            log.warning("iteration %d skipped: non-finite loss or gradient (%d in a row)", iteration,
                        consecutive_skips)
            if consecutive_skips >= args.max_skipped_iters:
                raise TrainingStopped(f"{consecutive_skips} consecutive iterations had a non-finite loss or gradient "
                                      f"(--max-skipped-iters {args.max_skipped_iters}); stopping at iteration "
                                      f"{iteration}. Lower --lr or check the data.")

        logged = (*spec.loss_keys, *spec.ratio_keys)
        reduced = all_reduce_mean([step[k] for k in logged], env.device)
        for key, value in zip(logged, reduced):
            interval[key] += value
        interval_iters += 1

        if iteration % args.log_interval == 0 or iteration == args.train_iters:
            elapsed = max(time.time() - interval_start, 1e-9)
            samples_per_second = interval_iters * global_batch / elapsed
            means = {k: interval[k] / interval_iters for k in interval}
            n = args.seq_length
            mfu = None
            if peak:
                mfu = spec.flops_per_sequence(cfg, n, means) * samples_per_second / (peak * env.world_size)
            record = {
                "iteration": iteration, "consumed_samples": consumed,
                **{k: means[k] for k in spec.loss_keys}, "lr": lr,
                "grad_norm": None if grad_norm is None else float(grad_norm),
                **{k: means[k] for k in spec.ratio_keys},
                "bases_per_second": samples_per_second * n, "samples_per_second": samples_per_second,
                "mfu": mfu, "skipped_iters": skipped_total, "corrupt_shards": train_batches.corrupt_shards,
            }
            logger.log(record, token_lengths)
            progress.line(iteration, means["loss"], samples_per_second * n,
                          " ".join(f"{k} {means[k]:.3f}" for k in spec.loss_keys[1:])
                          + "".join(f" | {means[k]:.2f} b/tok" for k in spec.ratio_keys[:1]))
            interval.clear()
            interval_iters, interval_start = 0, time.time()

        stopping = stop.agreed(env.device)
        if (iteration % args.eval_interval == 0 or iteration == args.train_iters
                or (stopping and stopping.final_validation)):
            result = evaluate(engine, valid_batches, args, env.device, spec, pipeline)
            if result is not None:
                logger.log({"iteration": iteration, "split": "valid", "consumed_samples": consumed, **result})
                if rank0:
                    log.info("valid @ %d: loss %.4f | %s %.4f | perplexity %.3f", iteration, result["loss"],
                             spec.eval_accuracy_name, result[spec.eval_accuracy_name], result["perplexity"])

        if args.exit_interval and iteration >= args.exit_interval:
            exit_reason = f"--exit-interval {args.exit_interval}"
            break
        if stopping:
            exit_reason = stopping.reason
            break
        if iteration % args.save_interval == 0 and iteration < args.train_iters:
            save(f"--save-interval {args.save_interval}")

    save(exit_reason)
    logger.close()
    if rank0:
        log.info("stopped at iteration %d: %s", iteration, exit_reason)
        if args.save:
            # Both a finished run and a signalled one exit 0; launchers (slurm/) read this to decide
            # whether to requeue.
            status = {"iteration": iteration, "train_iters": args.train_iters, "reason": exit_reason,
                      "finished": iteration >= args.train_iters, "consumed_samples": consumed}
            checkpointing.atomic_write(Path(args.save) / "exit_status.json", json.dumps(status) + "\n")
    dist.barrier()
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return train(args)
    except (ConfigError, TrainingStopped) as e:
        print(f"megamerge/train.py: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
