#!/usr/bin/env python
"""What merge_parts.py's input check costs: the merge command with `--input-check sha256` (the
default: every input still at its path is hashed again) against `--input-check size`, side by side,
written to the `Merging corpus parts` section of BENCHMARKS.md.

    python benchmarks/bench_merge_parts.py --repeats 5

Inputs: the real genomes in ../shared/data/genomes (read in place, skipped when absent) and the
issue's draft assembly (30,000 uniform random ACGT scaffolds of 1500-8000 bases, one gzip file,
generated under a temporary directory). Each is prepared once as `--parts` parts; then the merge
command runs `--repeats` times per setting, the two settings interleaved run by run so they share
the machine's load. Per run: CPU seconds of the command (getrusage of the child, start-up included)
and its wall time; medians are reported, with the input bytes hashed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_corpus_scale import write_draft_assembly
from benchmarks.bench_data import SHARED_GENOMES, load_average
from benchmarks.benchmarks_md import machine_line, update_section
from benchmarks.prepare_timing import cpu_seconds

REPO = Path(__file__).resolve().parents[1]
SECTION = "Merging corpus parts (issue 16)"
CHECKS = ("size", "sha256")


def prepare_parts(inputs: list[Path], work: Path, parts: int, seq_len: int) -> list[Path]:
    dirs = [work / f"part{k}" for k in range(1, parts + 1)]
    for k, out in enumerate(dirs, 1):
        subprocess.run([sys.executable, str(REPO / "data_prep" / "prepare.py"), "--input", *map(str, inputs),
                        "--out", str(out), "--seq-len", str(seq_len), "--part", f"{k}/{parts}",
                        "--no-progress"],
                       check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    return dirs


def merge_once(parts: list[Path], out: Path, check: str) -> tuple[float, float]:
    """(CPU s, wall s) of one merge command."""
    command = [sys.executable, str(REPO / "data_prep" / "merge_parts.py"), "--parts", *map(str, parts),
               "--out", str(out), "--input-check", check, "--overwrite", "--no-progress"]  # fmt: skip
    cpu, wall = cpu_seconds(), time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return cpu_seconds() - cpu, time.perf_counter() - wall


def bench(label: str, inputs: list[Path], work: Path, parts: int, repeats: int, seq_len: int) -> list[str]:
    prepared = prepare_parts(inputs, work, parts, seq_len)
    hashed = sum(summary["bytes"] for part in prepared
                 for summary in json.loads((part / "manifest.json").read_text())["files"])
    runs: dict[str, list[tuple[float, float]]] = {check: [] for check in CHECKS}
    for _ in tqdm(range(repeats), desc=label, leave=False):
        for check in CHECKS:
            runs[check].append(merge_once(prepared, work / "merged", check))
    rows = []
    for check, measured in runs.items():
        cpu = statistics.median(run[0] for run in measured)
        wall = statistics.median(run[1] for run in measured)
        rows.append(f"| {label} | {hashed / 1e6:.1f} | `--input-check {check}` | {repeats} | {cpu:.2f} "
                    f"| {wall:.2f} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    parser.add_argument("--repeats", type=int, default=5, help="merge runs per setting and input")
    parser.add_argument("--parts", type=int, default=2, help="parts each input is prepared in")
    parser.add_argument("--seq-len", type=int, default=4096, help="prepare.py --seq-len")
    parser.add_argument("--no-write", action="store_true", help="print the table only, leave BENCHMARKS.md")
    args = parser.parse_args(argv)

    load_before = load_average()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if SHARED_GENOMES.is_dir():
            rows += bench("real genomes", [SHARED_GENOMES], work / "real", args.parts, args.repeats,
                          args.seq_len)
        draft = work / "draft.fa.gz"
        write_draft_assembly(draft, 30_000, 1500, 8000, seed=0)
        rows += bench("draft assembly, 30,000 scaffolds", [draft], work / "draft", args.parts, args.repeats,
                      args.seq_len)  # fmt: skip
    intro = (f"`python benchmarks/bench_merge_parts.py --repeats {args.repeats} --parts {args.parts}`, "
             f"{time.strftime('%Y-%m-%d %H:%M')}, load average before {load_before}, after {load_average()}; "
             f"{machine_line()}. The merge command of {args.parts} parts, CPU seconds (start-up included) "
             "and wall seconds, medians of interleaved runs; `sha256` reads every input file once more to "
             "prove it is the file its part read (a same-size edit after a part finished is refused), `size` "
             "compares sizes only.")
    body = "\n".join([
        intro,
        "",
        "| input | input MB hashed | merge | runs | CPU s | wall s |",
        "|---|---:|---|---:|---:|---:|",
        *rows,
    ])
    print(body)
    if not args.no_write:
        update_section(SECTION, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
