"""Resolve and validate a DeepSpeed JSON config against the command-line flags, before
`deepspeed.initialize` (whose own assertions are late and terse).

"auto" values are filled from the flags: batch sizes, the optimizer's lr / betas / eps / weight
decay, and gradient clipping. Every inconsistency raises `ConfigError` saying how to fix it.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from megamerge.parallel.process_groups import data_parallel_size

AUTO = "auto"
DEFAULT_GLOBAL_BATCH = 256  # the paper's 256 sequences x 4096 bases


class ConfigError(ValueError):
    pass


def _fill(cfg: dict, key: str, value) -> None:
    if cfg.get(key, AUTO) == AUTO:
        cfg[key] = value


def resolve_ds_config(path: str | Path, args, world_size: int, has_cuda: bool) -> dict:
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"--ds_config {path}: no such file (see ds_configs/ for zero2.json, zero1_pp.json, "
                          "cpu.json)") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"--ds_config {path}: not valid JSON ({e})") from None
    cfg = copy.deepcopy(raw)
    where = f"--ds_config {path}"
    dp = _check_zero_and_layout(cfg, where, args, world_size)
    _check_sections(cfg, where, has_cuda)
    _resolve_batch_sizes(cfg, where, args, dp)
    _fill(cfg, "gradient_clipping", args.clip_grad)
    _fill_optimizer(cfg, where, args, has_cuda)
    cfg.setdefault("steps_per_print", 10**9)  # megamerge prints its own progress line
    return cfg


def _check_zero_and_layout(cfg: dict, where: str, args, world_size: int) -> int:
    """The ZeRO stage against the parallel sizes; returns the data-parallel size."""
    tp, pp = args.tensor_model_parallel_size, args.pipeline_model_parallel_size
    sp = getattr(args, "sequence_parallel_size", 1)
    zero = cfg.get("zero_optimization", {}).get("stage", 0)
    if pp > 1 and zero >= 2:
        raise ConfigError(f"{where} uses ZeRO stage {zero}, but DeepSpeed's pipeline engine only supports "
                          f"ZeRO-0/1: use --ds_config ds_configs/zero1_pp.json for "
                          f"--pipeline-model-parallel-size {pp}")
    if zero < 1:
        raise ConfigError(f"{where}: ZeRO stage {zero}; megamerge needs stage >= 1 (its NaN/Inf step "
                          "skipping lives in the ZeRO optimizer). Set zero_optimization.stage to 1 or 2.")
    if zero > 2:
        raise ConfigError(f"{where}: ZeRO-3 is not supported (tensor-parallel layers assume whole "
                          "parameters); use stage 1 or 2")
    try:
        return data_parallel_size(world_size, tp, pp, sp)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _check_sections(cfg: dict, where: str, has_cuda: bool) -> None:
    if "scheduler" in cfg:
        raise ConfigError(f"{where} has a 'scheduler' section; megamerge sets the learning rate itself from "
                          "--lr, --min-lr, --lr-warmup-iters and --lr-decay-style. Remove the section.")
    if cfg.get("fp16", {}).get("enabled"):
        raise ConfigError(f"{where} enables fp16; MergeDNA trains in bf16 (GPU) or fp32 (CPU)")
    if cfg.get("bf16", {}).get("enabled") and not has_cuda:
        raise ConfigError(f"{where} enables bf16 but there is no CUDA device; use ds_configs/cpu.json "
                          "(fp32) on CPU")


def _resolve_batch_sizes(cfg: dict, where: str, args, dp: int) -> None:
    # Command-line flags win over numbers in the JSON (as in Megatron-DeepSpeed); "auto" entries
    # and absent ones come from the flags' defaults.
    micro = (args.micro_batch_size if args.micro_batch_size is not None
             else cfg.get("train_micro_batch_size_per_gpu", AUTO))
    if micro == AUTO:
        raise ConfigError(f"{where}: train_micro_batch_size_per_gpu is \"auto\"; pass --micro-batch-size")
    micro = int(micro)
    global_batch = (args.global_batch_size if args.global_batch_size is not None
                    else cfg.get("train_batch_size", AUTO))
    if global_batch == AUTO:
        global_batch = DEFAULT_GLOBAL_BATCH
    global_batch = int(global_batch)
    accum = cfg.get("gradient_accumulation_steps", AUTO)
    if accum == AUTO:
        if global_batch % (micro * dp):
            raise ConfigError(f"global batch {global_batch} is not divisible by micro-batch {micro} x "
                              f"data-parallel size {dp}; change --global-batch-size or --micro-batch-size")
        accum = global_batch // (micro * dp)
    accum = int(accum)
    if micro * accum * dp != global_batch:
        raise ConfigError(f"micro-batch {micro} x accumulation {accum} x data-parallel {dp} = "
                          f"{micro * accum * dp}, not the global batch {global_batch}; set "
                          "gradient_accumulation_steps to \"auto\" or fix the sizes")
    cfg["train_micro_batch_size_per_gpu"] = micro
    cfg["gradient_accumulation_steps"] = int(accum)
    cfg["train_batch_size"] = global_batch


def _fill_optimizer(cfg: dict, where: str, args, has_cuda: bool) -> None:
    opt = cfg.setdefault("optimizer", {"type": "AdamW", "params": {}})
    if opt.get("type", "").lower() not in ("adam", "adamw"):
        raise ConfigError(f"{where}: optimizer {opt.get('type')!r}; the paper's recipe is AdamW")
    params = opt.setdefault("params", {})
    _fill(params, "lr", args.lr)
    _fill(params, "betas", [args.adam_beta1, args.adam_beta2])
    _fill(params, "eps", args.adam_eps)
    _fill(params, "weight_decay", args.weight_decay)
    if not has_cuda and not params.get("torch_adam", False):
        raise ConfigError(f"{where}: on CPU set optimizer.params.torch_adam to true (DeepSpeed's fused Adam "
                          "needs CUDA); ds_configs/cpu.json does")
    if has_cuda:
        _choose_fused_adam(params)


def _choose_fused_adam(params: dict) -> None:
    """On CUDA the update runs fused: torch's AdamW with fused=True (one kernel over every
    parameter instead of a loop of small ones, nothing to compile at start-up). A config that sets
    torch_adam to false keeps DeepSpeed's FusedAdam (a JIT-built op); one that names `fused` keeps it."""
    params.setdefault("torch_adam", True)
    if params["torch_adam"]:
        params.setdefault("fused", True)
