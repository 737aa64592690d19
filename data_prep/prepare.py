#!/usr/bin/env python
"""FASTA -> zarr genome store -> WebDataset shards + manifest.

    python data_prep/prepare.py --input genomes/ extra.fa.gz --out data/corpus --seq-len 4096
    python data_prep/prepare.py --from-store --out data/corpus --seq-len 1024     # re-cut in place
    python data_prep/prepare.py --from-store data/corpus/genomes.zarr --out data/c1k --seq-len 1024

Output (see data_prep/README.md): DIR/genomes.zarr, DIR/{train,valid}/shard-NNNNNN.tar and
DIR/manifest.json. Everything is built in a temporary directory next to DIR and moved into place
only when complete, so a failed run leaves nothing partial behind. Bad input stops the run with a
one-line error naming the file (and record and offset) and exit code 1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import NamedTuple

if __package__ in (None, ""):  # run as a script: make `data_prep` and `megamerge` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if __name__ == "__main__":
    from data_prep import one_blas_thread

    one_blas_thread()

from tqdm import tqdm

import megamerge
from data_prep.accounting import SpeciesStats, totals_of
from data_prep.chunking import DROP_REASONS, ChunkSpec, cut_record
from data_prep.corpus_parts import files_of_part, group_name, parse_part
from data_prep.empty_split import why_no_training_samples
from data_prep.fasta import InputError, load_species_map, scan_inputs, species_for
from data_prep.genome_store import (
    SEQUENCE_ENCODING,
    FileIngest,
    GenomeStore,
    create_store,
    finalize_store,
    ingest_file,
)
from data_prep.output_dir import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    SPLITS,
    STORE_NAME,
    check_not_overlapping,
    check_replaceable,
    describe_os_error,
    fresh_work_dir,
    in_place_work_dir,
    publish_dir,
    publish_in_place,
)
from data_prep.shard_writer import SplitShardWriter
from data_prep.split import SplitSpec

MANIFEST_FORMAT_VERSION = 1
SKIPPED_SHOWN = 20  # skipped files printed; the manifest lists all of them


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Turn FASTA/FASTA.gz files into a zarr genome store and WebDataset shards.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", nargs="+", metavar="PATH", help="FASTA(.gz) files or directories of them")
    source.add_argument(
        "--from-store",
        nargs="?",
        const="",
        metavar="STORE",
        help="re-cut shards from an existing genome store instead of parsing FASTA "
        "(no value: OUT/genomes.zarr, re-cut in place)",
    )
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--seq-len", type=int, default=4096, help="chunk length in bases")
    parser.add_argument("--overlap", type=int, default=0, help="bases shared by consecutive chunks")
    parser.add_argument(
        "--min-len", type=int, default=None,
        help="drop a record tail shorter than this (default: seq-len // 4)",
    )
    parser.add_argument("--max-n-frac", type=float, default=0.1, help="drop chunks with a larger N fraction")
    split = parser.add_mutually_exclusive_group()
    split.add_argument("--valid-species", nargs="+", default=None, metavar="SPECIES",
                       help="held-out species (default: none; a --from-store re-cut keeps its "
                            "corpus's split)")
    split.add_argument(
        "--valid-frac", type=float, default=None,
        help="fraction of records (by hash of record id) held out (default: 0; a --from-store re-cut keeps "
             "its corpus's split)",
    )  # fmt: skip
    parser.add_argument("--species-map", type=Path,
                        help="TSV 'file<TAB>species' overriding the file-name label")
    parser.add_argument(
        "--on-invalid",
        choices=("error", "n"),
        default="error",
        help="non-IUPAC characters: stop with an error, or write them as N and count them",
    )
    parser.add_argument("--samples-per-shard", type=int, default=2048, help="samples per tar shard")
    parser.add_argument(
        "--mix-shards", type=int, default=16, help="shards filled at once, so each mixes species and records"
    )
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the sample-to-shard assignment (default: 0; a --from-store re-cut "
                             "keeps its corpus's)")
    parser.add_argument(
        "--workers", type=int, default=1,
        help="processes parsing files in parallel; with more than one, shards are cut afterwards from the "
             "store instead of while parsing, and each process pays ~0.5 s of start-up: on 2 cores, "
             "2 workers were slower than 1 up to 29 Mbp and about equal at 100 Mbp (BENCHMARKS.md), so "
             "raise it for multi-GB corpora of many large files on many cores",
    )  # fmt: skip
    parser.add_argument(
        "--part", type=parse_part, metavar="K/N",
        help="prepare only part K of N of the input files (balanced by size; groups and sample keys as in "
             "the whole corpus), for data_prep/merge_parts.py to join (slurm/prepare_corpus.sh runs the "
             "parts)",
    )  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers must be at least 1, got {args.workers}")
    if args.part and args.from_store is not None:
        parser.error("--part splits the FASTA inputs of --input; a --from-store re-cut reads one store whole")
    if args.min_len is None:
        args.min_len = args.seq_len // 4
    return args


# --------------------------------------------------------------------------------------------- ingest


def ingest_jobs(files: list[Path], species: list[str], groups: list[int], store_path: Path,
                args) -> list[tuple]:
    return [(str(store_path), group_name(i), str(files[i]), species[i], args.on_invalid) for i in groups]


def part_groups(args: argparse.Namespace, files: list[Path]) -> list[int]:
    """Indices of the input files this run reads: all of them, or those of --part K/N."""
    if args.part is None:
        return list(range(len(files)))
    return files_of_part([path.stat().st_size for path in files], *args.part)


def record_where(file_name: str, record_id: str, locator: str) -> str:
    """A record as the manifest's empty_records and duplicate_ids name it."""
    return f"{file_name}: record {record_id!r} ({locator})"


def ingest_parallel(jobs: list[tuple], args: argparse.Namespace) -> list[dict]:
    """Parse files in worker processes; each writes its own group of the store."""
    # Imported here: ~40 ms of start-up that the default single-process run does not need.
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    total_bytes = sum(Path(job[2]).stat().st_size for job in jobs)
    bar = tqdm(total=total_bytes, unit="B", unit_scale=True, desc="ingest", disable=args.no_progress or None)
    summaries = []
    # spawn, not fork: zarr's event-loop thread (store reads) and thread pools must not be
    # inherited mid-flight.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(args.workers, len(jobs)), mp_context=context) as pool:
        futures = [pool.submit(ingest_file, *job) for job in jobs]
        try:
            for future in as_completed(futures):
                summaries.append(future.result())
                bar.update(summaries[-1]["bytes"])
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    bar.close()
    return sorted(summaries, key=lambda s: s["group"])


def ingest_streaming(jobs: list[tuple], summaries: list[dict]):
    """Single process: ingest file after file and hand each record on as soon as it is stored."""
    for job in jobs:
        ingest = FileIngest(*job)
        yield from ingest
        summaries.append(ingest.summary)


# ------------------------------------------------------------------------------------------------ cut


def cut(records, species: set[str], total_bases: int | None, out_dir: Path, args) -> tuple[dict, list, dict]:
    """Chunk records (in corpus order) into the split's shards; return per-species stats and shards."""
    chunk_spec = ChunkSpec(args.seq_len, args.overlap, args.min_len, args.max_n_frac)
    split_spec = SplitSpec(frozenset(args.valid_species), args.valid_frac)
    unknown = set(args.valid_species) - species
    if unknown:
        raise InputError(f"--valid-species not in the corpus: {', '.join(sorted(unknown))}")
    writers = {
        split: SplitShardWriter(out_dir, split, args.samples_per_shard, args.mix_shards, args.seed)
        for split in SPLITS
    }
    per_species: dict[str, SpeciesStats] = {}
    seen_ids: set[str] = set()
    file_names: dict[str, str] = {}  # source path -> file name: once per file, not per record
    notes = {"empty_records": [], "duplicate_ids": [], "longest_record": 0}
    bar = tqdm(total=total_bases, unit="bp", unit_scale=True, desc="cut", disable=args.no_progress or None)
    for record in records:
        counts = record.counts
        stats = per_species.setdefault(record.species, SpeciesStats())
        stats.records += 1
        stats.input_bases += counts.length
        stats.n_bases += counts.n
        stats.iupac_bases += counts.iupac
        stats.lower_bases += counts.lower
        stats.invalid_bases += counts.invalid
        notes["longest_record"] = max(notes["longest_record"], counts.length)
        source = (file_names.get(record.source_file)
                  or file_names.setdefault(record.source_file, Path(record.source_file).name))  # fmt: skip
        locator = record.locator
        if counts.length == 0:
            stats.empty_records += 1
            notes["empty_records"].append(record_where(source, record.record_id, locator))
        if record.record_id in seen_ids:
            stats.duplicate_ids += 1
            notes["duplicate_ids"].append(record_where(source, record.record_id, locator))
        seen_ids.add(record.record_id)

        result = cut_record(record.codes, chunk_spec, counts.n_like)
        stats.kept_bases += result.kept_bases
        for reason, count in result.dropped_bases.items():
            stats.dropped_bases[reason] += count
        split = split_spec.split_of(record.species, record.record_id)
        meta = {
            "species": record.species,
            "record": record.record_id,
            "record_index": record.index,
            "source": source,
            "array": locator,
        }
        writers[split].write_chunks(record.codes, result.starts.tolist(), result.lengths.tolist(), meta,
                                    locator.replace("/", "-"))  # a '/' in a tar member name is a folder
        stats.samples[split] += len(result.starts)
        bar.update(counts.length)
    bar.close()
    shards = [shard for split in SPLITS for shard in writers[split].close()]
    return per_species, shards, notes


# ------------------------------------------------------------------------------------------- manifest


def build_manifest(args, store_ref: str, store: GenomeStore, per_species, shards, notes, timing) -> dict:
    totals = totals_of(per_species)
    for name, stats in [*per_species.items(), ("totals", totals)]:
        if not stats.balanced():  # a bug, never bad input: refuse to publish wrong accounting
            raise AssertionError(f"base accounting does not balance for {name}: {stats.as_dict()}")
    parameters = {
        key: (str(value) if isinstance(value, Path) else value)
        for key, value in vars(args).items()
        if key not in ("no_progress", "overwrite", "workers")
    }
    return {
        "format": MANIFEST_FORMAT,
        "format_version": MANIFEST_FORMAT_VERSION,
        "megamerge_version": megamerge.__version__,
        "created_unix": int(time.time()),
        "parameters": parameters,
        "sequence_encoding": {
            "member": "seq",
            "dtype": "uint8",
            "codes": SEQUENCE_ENCODING["codes"],
            "softmask_bit": SEQUENCE_ENCODING["softmask_bit"],
            "note": "one byte per base: the code, OR-ed with softmask_bit where the input was lower case "
            "(byte & 7 is the code, (byte >> 3) & 1 the soft-mask flag); IUPAC ambiguity codes (and, with "
            "--on-invalid n, invalid characters) are N. Tails shorter than seq_len are stored unpadded.",
        },
        "metadata_member": "json: species, record, record_index, source, array (GROUP/INDEX: the record's "
        "group in the store and its index in that group's record arrays), start, length, crc32",
        "store": store_ref,
        "drop_reasons": list(DROP_REASONS),
        "species": {name: stats.as_dict() for name, stats in sorted(per_species.items())},
        "totals": totals.as_dict(),
        "files": store.files,
        "splits": {
            split: {
                "samples": sum(s.samples for s in shards if s.split == split),
                "shards": sum(1 for s in shards if s.split == split),
            }
            for split in SPLITS
        },
        "shards": [vars(shard) for shard in shards],
        "empty_records": notes["empty_records"],
        "duplicate_ids": notes["duplicate_ids"],
        "timing_seconds": timing,
    }


# -------------------------------------------------------------------------------------------- publish


def resolve_store(args: argparse.Namespace) -> Path:
    store = Path(args.from_store) if args.from_store else args.out / STORE_NAME
    if store.is_dir() and not (store / "zarr.json").exists() and (store / STORE_NAME).exists():
        store = store / STORE_NAME
    if not store.is_dir():
        raise InputError(f"{store}: genome store not found")
    return store


class Plan(NamedTuple):
    work: Path  # the hidden build directory
    store_path: Path
    store_ref: str  # the store as the manifest names it
    in_place: bool  # a re-cut beside its store, replacing only shards and manifest
    files: list[Path]  # FASTA files to read (none for a re-cut)
    skipped: list[str]  # "PATH: why" for every file of an input directory left out


def plan_output(args: argparse.Namespace) -> Plan:
    """Find the inputs, check them against --out and --out itself, and only then create the build
    directory: a refused run has touched nothing."""
    out: Path = args.out
    inputs = [args.species_map] if args.species_map else []
    if args.from_store is not None:
        store_path = resolve_store(args)
        in_place = store_path.resolve().parent == out.resolve()
        check_not_overlapping(out, inputs if in_place else [*inputs, store_path])
        check_replaceable(out, args.overwrite, in_place)
        if in_place:
            return Plan(in_place_work_dir(out), store_path, STORE_NAME, True, [], [])
        return Plan(fresh_work_dir(out), store_path, str(store_path.resolve()), False, [], [])
    scan = scan_inputs(args.input)
    check_not_overlapping(out, [*map(Path, args.input), *inputs])
    check_replaceable(out, args.overwrite)
    work = fresh_work_dir(out)
    return Plan(work, work / STORE_NAME, STORE_NAME, False, scan.files, scan.skipped)


def _ingest_and_cut(args: argparse.Namespace, files: list[Path], groups: list[int], store_path: Path,
                    work: Path, timing: dict, started: float):
    mapping = load_species_map(args.species_map) if args.species_map else {}
    species = [species_for(path, mapping) for path in files]  # of every file: --valid-species names any
    create_store(store_path)
    jobs = ingest_jobs(files, species, groups, store_path, args)
    summaries: list[dict] = []
    if min(args.workers, len(jobs)) > 1:
        summaries = ingest_parallel(jobs, args)
        finalize_store(store_path, summaries, args.on_invalid)
        timing["ingest"] = round(time.perf_counter() - started, 3)
        records = GenomeStore(store_path).iter_records()
        total = sum(s["counts"]["length"] for s in summaries)
    else:  # cut while ingesting: records are never read back from the store
        records, total = ingest_streaming(jobs, summaries), None
    phase_started = time.perf_counter()
    result = cut(records, set(species), total, work, args)
    finalize_store(store_path, summaries, args.on_invalid)
    timing["cut" if "ingest" in timing else "ingest_and_cut"] = round(time.perf_counter() - phase_started, 3)
    return result


def run(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    out: Path = args.out
    timing: dict[str, float] = {}
    plan = plan_output(args)
    work, store_path = plan.work, plan.store_path
    published = False
    try:
        if args.from_store is None:
            groups = part_groups(args, plan.files)
            per_species, shards, notes = _ingest_and_cut(args, plan.files, groups, store_path, work, timing,
                                                         started)
        else:
            try:
                store = GenomeStore(store_path)
            except (FileNotFoundError, ValueError) as exc:
                raise InputError(str(exc)) from None
            total = sum(f["counts"]["length"] for f in store.files)
            species = {f["species"] for f in store.files}
            per_species, shards, notes = cut(store.iter_records(), set(species), total, work, args)
            timing["cut"] = round(time.perf_counter() - started, 3)
        if args.part is None and not any(shard.split == "train" for shard in shards):  # parts: merge_parts.py
            raise InputError(f"no training samples: {why_no_training_samples(per_species, notes, args)}")
        store = GenomeStore(store_path)
        timing["total"] = round(time.perf_counter() - started, 3)
        manifest = build_manifest(args, plan.store_ref, store, per_species, shards, notes, timing)
        manifest["skipped_files"] = plan.skipped
        if args.part is not None:
            manifest["part"] = {"part": args.part[0], "parts": args.part[1],
                                "groups": list(map(group_name, groups)),
                                "input_files": list(map(str, plan.files)), "working_directory": os.getcwd()}
        (work / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        if plan.in_place:
            publish_in_place(work, out)
        else:
            publish_dir(work, out)
        published = True
    finally:
        if not published:
            shutil.rmtree(work, ignore_errors=True)
    return manifest


def print_summary(manifest: dict, out: Path) -> None:
    totals = manifest["totals"]
    seconds = manifest["timing_seconds"]["total"]
    rate = totals["input_bases"] / max(seconds, 1e-9) / 1e6
    print(
        f"{len(manifest['files'])} files, {len(manifest['species'])} species, {totals['records']} records "
        f"({totals['empty_records']} empty, {totals['duplicate_ids']} duplicate ids) "
        f"in {seconds:.1f} s ({rate:.1f} MB of sequence/s)"
    )
    dropped = ", ".join(f"{reason} {count:,}" for reason, count in totals["dropped_bases"].items())
    print(f"bases: input {totals['input_bases']:,}  kept {totals['kept_bases']:,}  dropped: {dropped}")
    print(
        f"input: N {totals['n_bases']:,}  IUPAC->N {totals['iupac_bases']:,}  "
        f"soft-masked {totals['lower_bases']:,}  invalid->N {totals['invalid_bases']:,}"
    )
    for kind in ("empty_records", "duplicate_ids"):
        if manifest[kind]:
            shown = "; ".join(manifest[kind][:5]) + (" ..." if len(manifest[kind]) > 5 else "")
            print(f"{kind.replace('_', ' ')}: {shown}")
    skipped = manifest.get("skipped_files", [])
    for line in skipped[:SKIPPED_SHOWN]:
        print(f"skipped {line}")
    if len(skipped) > SKIPPED_SHOWN:
        more = len(skipped) - SKIPPED_SHOWN
        print(f"... and {more} more skipped files (all in manifest.json 'skipped_files')")
    splits = ", ".join(f"{split} {v['samples']} samples in {v['shards']} shards" for split, v in
                       manifest["splits"].items())
    print(f"{splits} -> {out}")


SPLIT_DEFAULTS = {"valid_species": [], "valid_frac": 0.0, "seed": 0}


def inherit_split_settings(args: argparse.Namespace) -> list[str]:
    """Fill the split settings left unset (None): a --from-store re-cut takes the held-out species or
    fraction, and the seed, that its corpus's manifest recorded (so a re-cut at another --seq-len
    keeps the same records held out); otherwise, or for what the manifest lacks, the defaults. A
    split flag given overrides the recorded split (both of its kinds). Returns the flags inherited."""
    recorded = {}
    if args.from_store is not None:
        manifest = resolve_store(args).parent / MANIFEST_NAME
        try:
            recorded = json.loads(manifest.read_text()).get("parameters", {}) if manifest.is_file() else {}
        except (OSError, ValueError) as e:
            raise InputError(f"{manifest}: cannot read the corpus's recorded split settings ({e})") from None
    split_given = args.valid_species is not None or args.valid_frac is not None
    inherited = []
    for name, default in SPLIT_DEFAULTS.items():
        if getattr(args, name) is not None:
            continue
        keep = name == "seed" or not split_given
        value = recorded.get(name) if keep and recorded.get(name) is not None else default
        if value != default:
            inherited.append(f"--{name.replace('_', '-')} "
                             f"{' '.join(map(str, value)) if isinstance(value, list) else value}")
        setattr(args, name, value)
    return inherited


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        inherited = inherit_split_settings(args)
        if inherited:
            print(f"prepare.py: keeping the corpus's split: {' '.join(inherited)}", file=sys.stderr)
        ChunkSpec(args.seq_len, args.overlap, args.min_len, args.max_n_frac)
        SplitSpec(frozenset(args.valid_species), args.valid_frac)
        manifest = run(args)
    except (InputError, ValueError) as exc:
        print(f"prepare.py: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # unwritable or full --out, unreadable input: the path and why, no traceback
        print(f"prepare.py: error: {describe_os_error(exc, args.out)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("prepare.py: interrupted; nothing was written", file=sys.stderr)
        return 130
    print_summary(manifest, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
