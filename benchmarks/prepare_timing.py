#!/usr/bin/env python
"""Time data_prep/prepare.py of any checkout: wall clock and CPU seconds per run.

    python benchmarks/prepare_timing.py --repo . --repeats 3 --mode in-process -- --input G --seq-len 4096
    python benchmarks/prepare_timing.py --repo /tmp/old --repeats 3 --mode cli -- --input G --seq-len 4096

Prints one JSON list of runs: {"wall": s, "cpu": s, "bases": input bases from the manifest}.
CPU seconds are user + system of every thread of the timed process plus the processes it waited
for (getrusage SELF + CHILDREN), so work moved to a worker process or a thread is never hidden.
"Per core" rates divide bases by these CPU seconds; that equals bases / wall / (cores actually used),
with cores used = cpu / wall.

Modes:
  in-process  prepare.main() called repeatedly in this interpreter after one untimed warm-up run:
              steady-state throughput, without interpreter start-up and imports;
  cli         `python <repo>/data_prep/prepare.py ...` as a fresh process per run: what a user pays,
              start-up and imports included.
`--repo` may be another checkout (bench_data.py --baseline exports an older revision), so both
versions are measured by the same code under the same load.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def cpu_seconds() -> float:
    own, waited = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + waited.ru_utime + waited.ru_stime


def _input_bases(out: Path) -> int:
    return json.loads((out / "manifest.json").read_text())["totals"]["input_bases"]


def time_in_process(repo: Path, prepare_args: list[str], repeats: int) -> list[dict]:
    sys.path.insert(0, str(repo))
    from data_prep import prepare  # imported from `repo`, which may be another checkout

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats + 1):
            out = Path(tmp) / f"run{i}"
            wall, cpu = time.perf_counter(), cpu_seconds()
            with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the JSON result
                code = prepare.main([*prepare_args, "--out", str(out), "--no-progress"])
            wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
            if code != 0:
                raise SystemExit(f"prepare.py exited with {code}")
            if i:  # run 0 warms up: lazy imports, first use of codecs, page cache of the input
                runs.append({"wall": wall, "cpu": cpu, "bases": _input_bases(out)})
    return runs


def time_cli(repo: Path, prepare_args: list[str], repeats: int) -> list[dict]:
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            out = Path(tmp) / f"run{i}"
            command = [sys.executable, str(repo / "data_prep" / "prepare.py"), *prepare_args,
                       "--out", str(out), "--no-progress"]  # fmt: skip
            wall, cpu = time.perf_counter(), cpu_seconds()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
            runs.append({"wall": wall, "cpu": cpu, "bases": _input_bases(out)})
    return runs


def time_prepare(repo: Path, prepare_args: list[str], repeats: int, mode: str) -> list[dict]:
    """Runs of `mode`, each measured in a fresh interpreter, so earlier imports never help."""
    command = [sys.executable, __file__, "--repo", str(repo), "--repeats", str(repeats), "--mode", mode, "--",
               *prepare_args]  # fmt: skip
    return json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo", type=Path, required=True,
                        help="checkout whose data_prep/prepare.py is timed")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mode", choices=("in-process", "cli"), default="in-process")
    parser.add_argument("prepare_args", nargs=argparse.REMAINDER,
                        help="-- then prepare.py arguments (no --out)")
    args = parser.parse_args(argv)
    prepare_args = args.prepare_args[1:] if args.prepare_args[:1] == ["--"] else args.prepare_args
    timer = time_in_process if args.mode == "in-process" else time_cli
    print(json.dumps(timer(args.repo.resolve(), prepare_args, args.repeats)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
