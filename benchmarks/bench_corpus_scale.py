#!/usr/bin/env python
"""Genome store at corpus scale (issue 16): prepare.py on draft assemblies of many scaffolds, this
commit against an older revision, written to the `Data pipeline` section of BENCHMARKS.md.

    python benchmarks/bench_corpus_scale.py --baseline 3812f89 --repeats 3
    python benchmarks/bench_corpus_scale.py --corpora gbp --no-write      # the 1 Gbp corpus, this commit only

Inputs, generated under a temporary directory and deleted afterwards (never committed):
  * the issue's draft assembly: 30,000 records of uniform random length in [1500, 8000], uniform
    random ACGT, 80 bases a line, gzip level 1 (one file, ~142 Mbp);
  * the real genomes in ../shared/data/genomes, read in place;
  * with `--corpora gbp`, a 1 Gbp corpus of 100,000 records (10 files of 10,000 records of uniform
    random length in [5000, 15000], same alphabet and format), timed once, for the baseline too only
    with --gbp-baseline (the old store writes 100,000 arrays: half an hour on a loaded 2-core machine).
Per run: CPU seconds of the `python data_prep/prepare.py` command (getrusage of the child: start-up
included), MB of sequence per CPU second, files and bytes of genomes.zarr (bytes as stored, and
per base). Versions are interleaved run by run so they share the machine's load.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_data import CORPUS_SCALE_SUBSECTION, SHARED_GENOMES, export_revision, load_average
from benchmarks.benchmarks_md import machine_line, update_subsection
from benchmarks.prepare_timing import cpu_seconds

REPO = Path(__file__).resolve().parents[1]
TARGET_MB_PER_CPU_S = 20.0
TARGET_BYTES_PER_BASE = 0.35
SECTION, SUBSECTION = "Data pipeline", CORPUS_SCALE_SUBSECTION


def write_draft_assembly(path: Path, records: int, min_len: int, max_len: int, seed: int) -> int:
    """Uniform random ACGT records of uniform random length in [min_len, max_len], 80 bases a line,
    gzip level 1; returns the bases written."""
    rng = np.random.default_rng(seed)
    letters = np.frombuffer(b"ACGT", np.uint8)
    total = 0
    with gzip.open(path, "wb", compresslevel=1) as handle:
        for index in range(records):
            length = int(rng.integers(min_len, max_len + 1))
            bases = letters[rng.integers(0, 4, length)].tobytes()
            lines = b"\n".join(bases[i : i + 80] for i in range(0, length, 80))
            handle.write(b">scaffold_%d\n%s\n" % (index, lines))
            total += length
    return total


def store_footprint(store: Path) -> tuple[int, int]:
    """(files, bytes) of a directory tree: regular files and their sizes as stored on disk."""
    files = allocated = 0
    for directory, _, names in os.walk(store):
        for name in names:
            files += 1
            allocated += os.stat(os.path.join(directory, name)).st_blocks * 512
    return files, allocated


def run_once(repo: Path, inputs: list[Path], out: Path, seq_len: int) -> dict:
    command = [sys.executable, str(repo / "data_prep" / "prepare.py"), "--input", *map(str, inputs), "--out",
               str(out), "--seq-len", str(seq_len), "--no-progress"]  # fmt: skip
    cpu = cpu_seconds()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    cpu = cpu_seconds() - cpu
    files, stored = store_footprint(out / "genomes.zarr")
    bases = json.loads((out / "manifest.json").read_text())["totals"]["input_bases"]
    shutil.rmtree(out)
    return {"cpu": cpu, "files": files, "bytes": stored, "bases": bases}


def bench(versions: dict[str, Path], inputs: list[Path], work: Path, repeats: int, seq_len: int) -> dict:
    """Medians per version over `repeats` interleaved runs."""
    runs: dict[str, list[dict]] = {name: [] for name in versions}
    for repeat in tqdm(range(repeats), desc="repeats", leave=False):
        for name, repo in versions.items():
            runs[name].append(run_once(repo, inputs, work / f"out-{repeat}", seq_len))
    result = {}
    for name, measured in runs.items():
        bases = measured[0]["bases"]
        cpu = statistics.median(run["cpu"] for run in measured)
        result[name] = {"bases": bases, "cpu": cpu, "mb_per_cpu_s": bases / cpu / 1e6,
                        "files": measured[0]["files"], "bytes": measured[0]["bytes"]}  # fmt: skip
    return result


def table_rows(label: str, inputs: int, results: dict, repeats: int) -> list[str]:
    rows = []
    for version, r in results.items():
        rate_ok = "yes" if r["mb_per_cpu_s"] >= TARGET_MB_PER_CPU_S else "NO"
        rows.append(f"| {label} | {r['bases'] / 1e6:.0f} | {version} | {repeats} | {r['cpu']:.2f} | "
                    f"**{r['mb_per_cpu_s']:.1f}** ({rate_ok}) | {r['files']:,} | {r['files'] / inputs:.1f} | "
                    f"{r['bytes'] / 1e6:.1f} | {r['bytes'] / r['bases']:.3f} |")  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    parser.add_argument("--baseline", metavar="REV", help="also time prepare.py of this git revision")
    parser.add_argument("--repeats", type=int, default=3,
                        help="interleaved runs per version and input (medians)")
    parser.add_argument("--seq-len", type=int, default=4096, help="prepare.py --seq-len")
    parser.add_argument("--corpora", nargs="+", choices=("draft", "real", "gbp"), default=["draft", "real"],
                        help="inputs: the 30,000-scaffold draft, the real genomes, the 1 Gbp corpus")
    parser.add_argument("--gbp-baseline", action="store_true",
                        help="time the baseline on the 1 Gbp corpus too")
    parser.add_argument("--no-write", action="store_true", help="print only, leave BENCHMARKS.md alone")
    args = parser.parse_args(argv)

    rows = []
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        tmp = Path(tmp)
        versions = {"this commit": REPO}
        if args.baseline:
            versions[f"{args.baseline} (before)"] = export_revision(args.baseline, tmp / "baseline")
        load_before = load_average()
        corpora = []
        if "draft" in args.corpora:
            draft = tmp / "draft_30000.fa.gz"
            write_draft_assembly(draft, 30_000, 1500, 8000, seed=0)
            corpora.append(("draft assembly, 30,000 scaffolds of 1.5-8 kb (1 file)", [draft], 1,
                            versions, args.repeats))
        if "real" in args.corpora and SHARED_GENOMES.is_dir():
            corpora.append(("real genomes, shared/data/genomes (26 files, 210 records)", [SHARED_GENOMES], 26,
                            versions, args.repeats))  # fmt: skip
        if "gbp" in args.corpora:
            parts = [tmp / f"corpus_{index:02d}.fa.gz" for index in range(10)]
            for index, part in enumerate(tqdm(parts, desc="1 Gbp corpus")):
                write_draft_assembly(part, 10_000, 5000, 15000, seed=1 + index)
            gbp_versions = versions if args.gbp_baseline else {"this commit": REPO}
            corpora.append(("1 Gbp corpus, 100,000 records of 5-15 kb (10 files)", parts, 10,
                            gbp_versions, 1))
        for label, inputs, files, corpus_versions, repeats in corpora:  # the 1 Gbp corpus: one run
            results = bench(corpus_versions, inputs, tmp, repeats, args.seq_len)
            print(label, results, flush=True)
            rows += table_rows(label, files, results, repeats)
            for path in inputs:  # generated inputs go as soon as they are measured
                if path.parent == tmp:
                    path.unlink()
        load_after = load_average()

    body = f"""
### {SUBSECTION}

`python data_prep/prepare.py --seq-len {args.seq_len}`, this commit against the store before it.

Command: `python benchmarks/bench_corpus_scale.py{f" --baseline {args.baseline}" if args.baseline else ""} \
--repeats {args.repeats} --corpora {" ".join(args.corpora)}{" --gbp-baseline" if args.gbp_baseline else ""}`.
Machine: {machine_line()}; load average (1/5/15 min) before / after: {load_before} / {load_after} on
{os.cpu_count()} cores shared with other work. CPU seconds of the whole command (start-up included; user +
system of every thread, getrusage of the child), median of the runs; versions interleaved run by run.
Store files and bytes: regular files under `genomes.zarr` and the disk blocks they occupy.
Targets: >= {TARGET_MB_PER_CPU_S:.0f} MB of sequence per CPU second, a few dozen files per input, \
<= {TARGET_BYTES_PER_BASE} bytes per base on random ACGT.

| input | Mbp | version | runs | CPU s | MB per CPU s (>= 20) | store files | per input file | store MB | \
bytes per base |
|---|---:|---|---:|---:|---:|---:|---:|---:|---:|
{chr(10).join(rows)}
"""
    print(body)
    if not args.no_write:
        update_subsection(SECTION, SUBSECTION, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
