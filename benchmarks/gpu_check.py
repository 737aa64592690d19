"""One-shot GPU validation and throughput check: is megamerge correct on this GPU, and how fast
does the paper's three-pass step run? Writes gpu_report.json and gpu_report.md to --out.

    python benchmarks/gpu_check.py --out gpu_check [--wheelhouse wheelhouse/py3.12] [--budget-minutes 8]
    python benchmarks/gpu_check.py --out /tmp/dry --dry-run     # CPU, tiny preset, fp32, < 1 minute

1. the environment: torch, CUDA, GPU name and count, which optional kernels import;
2. the CUDA equivalence tests (`pytest -m cuda`, a subprocess; skipped with the reason in a dry run);
3. the 380m three-pass training step in bf16 through the DeepSpeed engine train.py builds
   (`megamerge.training.engine.build_engine`, config resolved by `resolve_ds_config`): bases/s,
   step time, TFLOP/s by `megamerge/models/mergedna/flops.py`, MFU, peak memory, at micro-batch
   sizes that fit, with and without activation checkpointing, with torch.compile, the 1b preset
   if time allows; local attention's kernel (blocked SDPA or flex_attention) chosen by timing;
4. where the time goes: one step timed by module (module hooks, synchronised) under torch.profiler.

Every measurement runs in its own process (an OOM or a hung compile cannot take the check down)
under a timeout cut from what is left of --budget-minutes, so the whole check ends in time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.kernel_sets import KERNEL_SETS  # imports nothing beyond the standard library
from megamerge.free_port import free_port  # the standard library only

CUDA_TEST_FILES = ["tests/unit/test_cuda_paths.py", "tests/unit/test_local_attention.py",
                   "tests/unit/test_gpu_check_cuda.py"]


# ------------------------------------------------------------------------------------ 1. environment
def environment() -> dict:
    import importlib.metadata

    import torch

    from megamerge.models.common.local_attention import flash_attn_available, flex_attention_available
    from megamerge.models.common.norm import apex_available

    cuda = torch.cuda.is_available()

    def version(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {
        "python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
        "deepspeed": version("deepspeed"), "gpu_count": torch.cuda.device_count() if cuda else 0,
        "gpu_name": torch.cuda.get_device_name() if cuda else None,
        "gpu_memory_gib": (round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
                           if cuda else None),
        "kernels": {"flash_attn": flash_attn_available(), "apex_fused_rmsnorm": apex_available(),
                    "flex_attention": flex_attention_available()},
    }


# ------------------------------------------------------------------------------- 2. CUDA tests
def cuda_tests(out: Path, dry_run: bool, timeout: float) -> dict:
    if dry_run:
        return {"status": "skipped", "reason": "dry run: no CUDA device is used", "tests": []}
    junit = out / "cuda_tests.xml"
    cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider",
           f"--junitxml={junit}", *CUDA_TEST_FILES]
    try:
        proc = subprocess.run(cmd, check=False, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "reason": f"over {timeout:.0f} s", "tests": []}
    (out / "cuda_tests.log").write_text(proc.stdout + proc.stderr)
    tests = []
    if junit.exists():
        for case in ET.parse(junit).getroot().iter("testcase"):
            outcome, detail = "passed", ""
            for kind in ("failure", "error", "skipped"):
                node = case.find(kind)
                if node is not None:
                    outcome, detail = kind, (node.get("message") or "")[:300]
            tests.append({"name": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                          "detail": detail, "seconds": float(case.get("time", 0))})
    status = "passed" if proc.returncode == 0 else f"pytest exit {proc.returncode}"
    return {"status": status, "tests": tests}


# ------------------------------------------------------------------------- 3. measurements (plan)


def measurement_plan(dry_run: bool, kernels: str = "both") -> list[dict]:
    """In order of importance: what is left when the budget runs out matters least. `kernels`:
    "both" times today's kernels beside the old ones (benchmarks/kernel_sets.py; 380m, micro 8) right after
    the local-kernel choice, so one run gives the ratio; "new" or "old" runs every step with one."""
    kernel_set = "old" if kernels == "old" else "new"
    if dry_run:
        base = {"preset": "tiny", "seq_length": 256, "warmup": 1, "steps": 1, "kernels": kernel_set}
        plan = [{**base, "micro": 1, "checkpointing": False, "attention": "blocked", "profile": True},
                {**base, "micro": 2, "checkpointing": True, "attention": "blocked"}]
        if kernels == "both":
            plan.append({**base, "micro": 1, "checkpointing": False, "attention": "blocked",
                         "kernels": "old"})
        return plan
    base = {"preset": "380m", "seq_length": 4096, "warmup": 2, "steps": 4, "kernels": kernel_set}
    plan = [{**base, "micro": 8, "checkpointing": False, "attention": kernel}
            for kernel in ("blocked", "flex")]
    if kernels == "both":
        plan += [{**base, "micro": 8, "checkpointing": False, "attention": "best", "kernels": "old"}]
    plan += [{**base, "micro": m, "checkpointing": False, "attention": "best"} for m in (4, 16)]
    plan += [{**base, "micro": m, "checkpointing": True, "attention": "best"} for m in (16, 32)]
    plan += [{**base, "micro": 8, "checkpointing": False, "attention": "best", "profile": True}]
    plan += [{**base, "micro": 8, "checkpointing": False, "attention": "best", "compile": True}]
    plan += [{**base, "preset": "1b", "micro": m, "checkpointing": True, "attention": "best"}
             for m in (8, 16)]
    return plan


def run_measurement(spec: dict, timeout: float) -> dict:
    """`spec` in a fresh process (this file's --measure); its JSON result, or why there is none."""
    env = {**os.environ, "MASTER_PORT": str(free_port()), "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    with tempfile.NamedTemporaryFile("r", suffix=".json") as result:
        started = time.monotonic()
        try:
            proc = subprocess.run([sys.executable, __file__, "--measure", json.dumps(spec),
                                   "--result", result.name],
                                  check=False, cwd=REPO, env=env, capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            return {**spec, "status": "timeout", "reason": f"over its {timeout:.0f} s share of the budget"}
        text = Path(result.name).read_text()
    if proc.returncode != 0 or not text:
        lines = (proc.stdout + proc.stderr).strip().splitlines()
        oom = any("out of memory" in line.lower() for line in lines[-10:])
        # the cause, not the tail
        errors = [line for line in lines if re.search(r"\w+(Error|Exception)\b", line)]
        reason = " | ".join(errors[-3:] if errors else lines[-6:])[-900:]
        return {**spec, "status": "out of memory" if oom else "failed", "reason": reason,
                "wall_s": round(time.monotonic() - started, 1)}
    return {**json.loads(text), "wall_s": round(time.monotonic() - started, 1)}


def run_plan(plan: list[dict], deadline: float, dry_run: bool) -> list[dict]:
    from tqdm import tqdm

    results: list[dict] = []
    best_kernel = "blocked"
    for spec in tqdm(plan, desc="measurements", unit="run"):
        if spec["attention"] == "best":
            spec = {**spec, "attention": best_kernel}
        left = deadline - time.monotonic()
        if left < (5 if dry_run else 45):
            results.append({**spec, "status": "skipped", "reason": "time budget spent"})
            continue
        results.append(run_measurement(spec, timeout=left if dry_run else min(left, 150)))
        kernels = [r for r in results
                   if r.get("status") == "ok" and r["micro"] == 8 and not r["checkpointing"]
                   and r["preset"] == "380m" and r.get("kernels") == plan[0].get("kernels")]
        if kernels:
            best_kernel = min(kernels, key=lambda r: r["step_s"])["attention"]
    return results


# ------------------------------------------------------------------------- report
def write_report(out: Path, report: dict) -> None:
    (out / "gpu_report.json").write_text(json.dumps(report, indent=2))
    env = report["environment"]
    lines = [f"# megamerge GPU check{' (dry run: CPU, tiny, fp32)' if report['dry_run'] else ''}", "",
             f"{env['gpu_name'] or 'no GPU'} x{env['gpu_count']}, torch {env['torch']}, CUDA {env['cuda']}, "
             f"DeepSpeed {env['deepspeed']}, Python {env['python']}; kernels: "
             + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in env["kernels"].items()),
             f"; {report['wall_s']:.0f} s in all.", "", "## CUDA equivalence tests", "",
             f"status: {report['cuda_tests']['status']} {report['cuda_tests'].get('reason', '')}", ""]
    lines += [f"- {t['outcome']}: {t['name']} {t['detail']}" for t in report["cuda_tests"]["tests"]]
    lines += ["", "## Training step (three passes, DeepSpeed engine)", "",
              ("| preset | micro | ckpt | compile | attention | kernels | status | step s | bases/s "
               "| TFLOP/s | MFU | peak GiB |"),
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    def cell(r, key, fmt="{:.3g}"):
        return fmt.format(r[key]) if r.get(key) is not None else "-"

    for r in report["measurements"]:
        lines.append(f"| {r['preset']} | {r['micro']} | {r['checkpointing']} | {r.get('compile', False)} | "
                     f"{r['attention']} | {r.get('kernels', 'new')} | {r['status']} | "
                     f"{cell(r, 'step_s')} | {cell(r, 'bases_per_s', '{:,.0f}')} | "
                     f"{cell(r, 'tflops')} | {cell(r, 'mfu', '{:.1%}')} | "
                     f"{cell(r, 'peak_memory_gib', '{:.1f}')} |")
    failed = [r for r in report["measurements"] if r["status"] not in ("ok",)]
    lines += [f"- {r['preset']} micro {r['micro']}: {r['status']}: {r.get('reason', '')[:300]}"
              for r in failed]
    profiled = [r for r in report["measurements"] if r.get("profile_by_module")]
    if profiled:
        r = profiled[0]
        lines += ["", f"## Where the time goes ({r['preset']}, micro {r['micro']}, one synchronised step)",
                  "", "| part | forward ms | backward ms |", "|---|---|---|"]
        for name, t in r["profile_by_module"].items():
            lines.append(f"| {name} | {t['forward_ms']:.1f} | {t['backward_ms']:.1f} |")
        lines += ["", "Top kernels / ops by device (CPU in a dry run) self time:", "", "```",
                  *r.get("profiler_top", []), "```"]
    (out / "gpu_report.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="folder for gpu_report.json / gpu_report.md")
    parser.add_argument("--dry-run", action="store_true",
                        help="CPU, tiny preset, fp32: proves the script runs")
    parser.add_argument("--kernels", choices=("both", *KERNEL_SETS), default="both",
                        help="kernel sets (benchmarks/kernel_sets.py): both (today's and the old side by "
                             "side, default), new, or old (every measurement with the old kernels)")
    parser.add_argument("--budget-minutes", type=float, default=8.0, help="the whole check ends within this")
    parser.add_argument("--wheelhouse", type=Path,
                        help="install missing dependencies from here first (offline)")
    parser.add_argument("--deps-target", type=Path,
                        default=Path(tempfile.gettempdir()) / "megamerge-gpu-deps",
                        help="where --wheelhouse installs to")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # internal: one measurement (JSON spec)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        from benchmarks.gpu_step import measure

        Path(args.result).write_text(json.dumps(measure(json.loads(args.measure))))
        return 0
    if args.out is None:
        parser.error("--out is required")
    started = time.monotonic()
    deadline = started + args.budget_minutes * 60 - 15  # room to write the report
    if args.wheelhouse:
        from benchmarks.wheelhouse import install_missing

        installed = install_missing(args.wheelhouse, args.deps_target)
        os.environ["PYTHONPATH"] = os.pathsep.join([str(args.deps_target), os.environ.get("PYTHONPATH", "")])
        print(f"installed from {args.wheelhouse}: {' '.join(installed) or '(nothing missing)'}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"dry_run": args.dry_run, "environment": environment()}
    if not args.dry_run and not report["environment"]["gpu_count"]:
        parser.error("no CUDA device here; use --dry-run to check the script on CPU")
    print(json.dumps(report["environment"]), flush=True)
    report["cuda_tests"] = cuda_tests(args.out, args.dry_run,
                                      timeout=max(30.0, 0.3 * (deadline - time.monotonic())))
    print(f"CUDA tests: {report['cuda_tests']['status']}", flush=True)
    report["measurements"] = run_plan(measurement_plan(args.dry_run, args.kernels), deadline, args.dry_run)
    report["wall_s"] = time.monotonic() - started
    write_report(args.out, report)
    print((args.out / "gpu_report.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
