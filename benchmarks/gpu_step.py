"""One measurement of benchmarks/gpu_check.py, in its own process: MergeDNA's three-pass training
step through the DeepSpeed engine train.py builds, timed; optionally one step timed by module.

On CUDA: bf16 (ds_configs/zero2.json); on CPU (the dry run): fp32 (ds_configs/cpu.json)."""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict

import torch

from megamerge.models.common.batch import Batch
from megamerge.models.mergedna.flops import training_flops_per_sequence
from megamerge.models.registry import family_of_preset
from megamerge.parallel import initialize_model_parallel
from megamerge.training.activation_checkpointing import apply_activation_checkpointing
from megamerge.training.arguments import build_parser
from megamerge.training.compile import apply_compile
from megamerge.training.distributed import init_distributed
from megamerge.training.ds_config import resolve_ds_config
from megamerge.training.engine import build_engine
from megamerge.training.model_from_flags import model_config
from megamerge.training.peak_flops import peak_flops_per_device

PROFILED_PARTS = {  # report row -> predicate on (module name, module)
    "local attention": lambda n, m: n.startswith(("local_encoder.blocks", "local_decoder.blocks"))
    and n.endswith(".attention"),
    "latent attention": lambda n, m: n.startswith(("latent_encoder.blocks", "latent_decoder.blocks"))
    and n.endswith(".attention"),
    "MLPs": lambda n, m: n.endswith(".feed_forward"),
    "merge layers": lambda n, m: ".mergers." in n and n.count(".") == 2,
}


def engine_for(spec: dict, cuda: bool):
    args = build_parser().parse_args(["--model", spec["preset"], "--seq-length", str(spec["seq_length"]),
                                      "--micro-batch-size", str(spec["micro"]),
                                      "--global-batch-size", str(spec["micro"]),
                                      "--ds_config",
                                      "ds_configs/zero2.json" if cuda else "ds_configs/cpu.json"])
    family = family_of_preset(args.model)
    for key, value in family.training_defaults.items():  # the family's paper recipe, as train.py fills it
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    ds_config = resolve_ds_config(args.ds_config, args, 1, cuda)
    # torch's AdamW, not DeepSpeed's FusedAdam: that one compiles just in time (minutes, and only
    # where nvcc exists), which a time-boxed check on a bare node cannot afford.
    ds_config["optimizer"]["params"]["torch_adam"] = True
    env = init_distributed()
    parallel = initialize_model_parallel(1, 1)
    torch.manual_seed(0)
    cfg = model_config(args)
    model = family.model_class(cfg)
    if spec.get("compile"):  # train.py --compile: each block on its own, merge code eager
        apply_compile(model)
    if spec["checkpointing"]:
        apply_activation_checkpointing(model)
    built = build_engine(model, parallel, ds_config, env.device)
    return built.engine, cfg, family, env.device, "torch AdamW"


def train_step(engine, batch: Batch, family) -> dict:
    out = engine(batch)
    engine.backward(out["loss"])
    with torch.profiler.record_function("optimizer"):
        engine.step()
    return {key: float(out[key]) for key in family.ratio_keys}


def synchronize(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(spec: dict) -> dict:
    from benchmarks.kernel_sets import use_kernel_set
    from megamerge.models.common import local_attention

    cuda = torch.cuda.is_available()
    local_attention.set_local_attention_kernel(spec["attention"])
    use_kernel_set(spec.get("kernels", "new"))
    engine, cfg, family, device, optimizer = engine_for(spec, cuda)
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 4, (spec["micro"], spec["seq_length"]), generator=generator)
    batch = Batch(ids, torch.arange(spec["micro"], dtype=torch.int64)).to(device)
    for _ in range(spec["warmup"]):
        train_step(engine, batch, family)
    synchronize(device)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    ratios, started = defaultdict(float), time.perf_counter()
    for _ in range(spec["steps"]):
        for key, value in train_step(engine, batch, family).items():
            ratios[key] += value / spec["steps"]
    synchronize(device)
    step_s = (time.perf_counter() - started) / spec["steps"]
    flops = spec["micro"] * training_flops_per_sequence(cfg, spec["seq_length"], ratios)
    peak = peak_flops_per_device(None, torch.cuda.get_device_name() if cuda else None)
    result = {**spec, "status": "ok", "optimizer": optimizer, "step_s": step_s,
              "bases_per_s": spec["micro"] * spec["seq_length"] / step_s, "tflops": flops / step_s / 1e12,
              "mfu": flops / step_s / peak if peak else None, "ratios": dict(ratios),
              "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None}
    if spec.get("profile"):
        result.update(profile_step(engine, batch, family, device))
    return result


def profile_step(engine, batch, family, device) -> dict:
    """One step with every profiled module bracketed by a record_function range and synchronised
    wall times (forward and backward hooks), plus torch.profiler's top ops by self time."""
    times = defaultdict(lambda: {"forward_ms": 0.0, "backward_ms": 0.0})
    open_ranges, handles = {}, []

    def bracket(part: str, phase: str):
        def enter(module, *_):
            synchronize(device)
            rf = torch.profiler.record_function(f"{part} {phase}")
            rf.__enter__()
            open_ranges[(id(module), phase)] = (rf, time.perf_counter())

        def leave(module, *_):
            synchronize(device)
            rf, t0 = open_ranges.pop((id(module), phase), (None, None))
            if rf is not None:
                rf.__exit__(None, None, None)
                times[part][f"{phase}_ms"] += 1e3 * (time.perf_counter() - t0)
        return enter, leave

    model = engine.module.model
    for name, module in model.named_modules():
        for part, matches in PROFILED_PARTS.items():
            if matches(name, module):
                enter, leave = bracket(part, "forward")
                handles += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
                if part != "merge layers":  # a TokenState output: backward hooks cannot see it
                    enter, leave = bracket(part, "backward")
                    handles += [module.register_full_backward_pre_hook(enter),
                                module.register_full_backward_hook(leave)]
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        synchronize(device)
        t0 = time.perf_counter()
        out = engine(batch)
        synchronize(device)
        t1 = time.perf_counter()
        engine.backward(out["loss"])
        synchronize(device)
        t2 = time.perf_counter()
        with torch.profiler.record_function("optimizer"):
            engine.step()
        synchronize(device)
        t3 = time.perf_counter()
    for handle in handles:
        handle.remove()
    parts = dict(times)
    # The merge layers' backward is in "rest".
    parts["rest (losses, norms, embeddings, unmerge, global merge)"] = {
        "forward_ms": 1e3 * (t1 - t0) - sum(t["forward_ms"] for t in times.values()),
        "backward_ms": 1e3 * (t2 - t1) - sum(t["backward_ms"] for t in times.values())}
    parts["optimizer"] = {"forward_ms": 0.0, "backward_ms": 1e3 * (t3 - t2)}
    sort_key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    with contextlib.suppress(Exception):  # older torch names it self_cuda_time_total
        table = prof.key_averages().table(sort_by=sort_key, row_limit=15)
        return {"profile_by_module": parts, "profiler_top": table.splitlines()}
    table = prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=15)
    return {"profile_by_module": parts, "profiler_top": table.splitlines()}
