#!/usr/bin/env python
"""Join the parts of a corpus prepared in parts (`prepare.py --part K/N`) into one corpus directory.

    python data_prep/prepare.py --input genomes/ --out parts/1 --part 1/2 --seq-len 4096   # node 1
    python data_prep/prepare.py --input genomes/ --out parts/2 --part 2/2 --seq-len 4096   # node 2
    python data_prep/merge_parts.py --parts parts/1 parts/2 --out data/corpus

(slurm/prepare_corpus.sh runs the parts as a SLURM job array and this as a job after them.)

Each part holds the store groups of its input files, under their numbers in the whole corpus, and
shards of their samples, keyed as in a one-process run. The merge puts the groups side by side in
one genomes.zarr, renumbers the shards of each split one after another (part order), and writes one
manifest: species figures summed, duplicate record ids and empty records found again over the whole
corpus, the accounting identity checked per species and in total. Files are hard-linked from the
parts (copied where the parts are on another file system), so the merge costs no bytes and the parts
are left as they were: delete them once the corpus is in place.

Refused, naming the part: a directory that is not a finished part, parts prepared with different
settings or inputs, a part missing or given twice, an input file in no part or in two, or changed
after its part read it (its size, and its sha256 unless --input-check size: the merge's one read of
the inputs), a shard that is missing or not the size its manifest says. `--out` obeys prepare.py's
rules (data_prep/README.md): built in a hidden directory beside it and moved into place when complete;
an existing corpus is replaced only with --overwrite.
"""

from __future__ import annotations

import argparse
import errno
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

from data_prep.accounting import SpeciesStats
from data_prep.corpus_parts import group_name
from data_prep.empty_split import why_no_training_samples
from data_prep.fasta import InputError, sha256_of
from data_prep.genome_store import GenomeStore, create_store, finalize_store, record_locator
from data_prep.output_dir import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    SPLITS,
    STORE_NAME,
    check_not_overlapping,
    check_replaceable,
    describe_os_error,
    fresh_work_dir,
    publish_dir,
)
from data_prep.prepare import build_manifest, print_summary, record_where
from data_prep.shard_writer import ShardInfo, shard_name

# Manifest fields every part must share (beyond its parameters) for the parts to be one corpus.
SHARED_FIELDS = ("format_version", "megamerge_version", "sequence_encoding", "store", "skipped_files")
PER_PART_PARAMETERS = ("part", "out")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Join corpus parts written by `prepare.py --part K/N` into one corpus directory.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--parts", nargs="+", required=True, type=Path, metavar="DIR",
                        help="the part directories (prepare.py --part K/N --out DIR), "
                             "all N of them, any order")
    parser.add_argument("--out", required=True, type=Path, help="the corpus directory to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing corpus directory")
    parser.add_argument("--input-check", choices=("sha256", "size"), default="sha256",
                        help="how an input file still at its path is compared with the one its part read: "
                             "its sha256 (reads every input once more) or only its size")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


class Part(NamedTuple):
    path: Path
    manifest: dict
    label: str  # "K/N"

    @property
    def groups(self) -> list[str]:
        return self.manifest["part"]["groups"]


def load_part(path: Path) -> Part:
    if not path.is_dir():
        raise InputError(f"{path}: no such part directory")
    manifest_path = path / MANIFEST_NAME
    if not manifest_path.is_file():
        raise InputError(f"{path}: no {MANIFEST_NAME}: not a finished part (did its prepare.py --part run "
                         "fail? see its log)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except ValueError as exc:
        raise InputError(f"{manifest_path}: not JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise InputError(f"{manifest_path}: not a prepare.py manifest")
    if "part" not in manifest:
        raise InputError(f"{path}: a whole corpus, not a part (prepared without --part K/N)")
    entry = manifest["part"]
    return Part(path, manifest, f"{entry['part']}/{entry['parts']}")


def check_same_settings(parts: list[Part]) -> None:
    """Every part was prepared from the same inputs with the same options and megamerge."""
    first = parts[0]
    reference = {key: value for key, value in first.manifest["parameters"].items()
                 if key not in PER_PART_PARAMETERS}
    for part in parts[1:]:
        settings = part.manifest["parameters"]
        for key in sorted(set(reference) | (set(settings) - set(PER_PART_PARAMETERS))):
            if settings.get(key) != reference.get(key):
                raise InputError(f"{part.path} (part {part.label}) was prepared with "
                                 f"--{key.replace('_', '-')} {settings.get(key)!r}, "
                                 f"{first.path} (part {first.label}) with "
                                 f"{reference.get(key)!r}: every part needs the same settings")
        for field in SHARED_FIELDS:
            if part.manifest.get(field) != first.manifest.get(field):
                raise InputError(f"{part.path} (part {part.label}): its {field} differs from that of "
                                 f"{first.path} (part {first.label}); prepare every part with the same "
                                 "megamerge and inputs")
        if part.manifest["part"]["input_files"] != first.manifest["part"]["input_files"]:
            raise InputError(f"{part.path} (part {part.label}) found other input files than {first.path} "
                             f"(part {first.label}): were files added or removed between the parts' runs?")


def check_part_numbers(parts: list[Part]) -> None:
    """Parts 1..N of the same N, each exactly once."""
    count = parts[0].manifest["part"]["parts"]
    seen: dict[int, Path] = {}
    for part in parts:
        entry = part.manifest["part"]
        if entry["parts"] != count:
            raise InputError(f"{part.path} is part {part.label}, {parts[0].path} part {parts[0].label}: "
                             "parts of different splits of the corpus")
        if entry["part"] in seen:
            raise InputError(f"{seen[entry['part']]} and {part.path} are both part {part.label}")
        seen[entry["part"]] = part.path
    missing = [f"{k}/{count}" for k in range(1, count + 1) if k not in seen]
    if missing:
        raise InputError(f"part {', '.join(missing)} missing (given {len(parts)} of {count}: "
                         f"{', '.join(p.label for p in parts)}); did its prepare.py --part run fail?")


def check_coverage(parts: list[Part]) -> None:
    """Every input file is in exactly one part, and each part's store holds exactly its files."""
    inputs = parts[0].manifest["part"]["input_files"]
    owner: dict[str, Part] = {}
    for part in parts:
        for group in part.groups:
            if group in owner:
                raise InputError(f"input file {inputs[int(group)]} (group {group}) is in part "
                                 f"{owner[group].label} ({owner[group].path}) and in part {part.label} "
                                 f"({part.path})")
            owner[group] = part
        files = part.manifest["files"]
        if [f["group"] for f in files] != part.groups or any(
            f["source_file"] != inputs[int(f["group"])] for f in files
        ):
            raise InputError(f"{part.path} (part {part.label}): its manifest's files are not the input files "
                             f"of its groups {part.groups}")
        store = _part_store(part)
        if [f["group"] for f in store.files] != part.groups:
            raise InputError(f"{store.path} (part {part.label}): holds groups "
                             f"{[f['group'] for f in store.files]}, its manifest lists {part.groups}")
    for index, path in enumerate(inputs):
        if group_name(index) not in owner:
            raise InputError(f"input file {path} (group {group_name(index)}) is in no part")


def check_inputs_unchanged(parts: list[Part], by_content: bool, progress: bool) -> None:
    """Each input file is still the one its part read: the same size and, `by_content`, the same sha256.
    A part that finished before a file was replaced (as a resumed submission can) holds the old one. An
    input no longer at its path (parts merged elsewhere) is not checked; a relative one is found from the
    directory its part ran in."""
    present = []  # (path, summary, part)
    for part in parts:
        ran_in = Path(part.manifest["part"].get("working_directory", "."))
        for summary in part.manifest["files"]:
            path = ran_in / summary["source_file"]
            try:
                size = path.stat().st_size
            except OSError:
                continue
            if size != summary["bytes"]:
                raise InputError(f"input file {path} is {size:,} bytes now, {summary['bytes']:,} when part "
                                 f"{part.label} ({part.path}) read it: replaced since; "
                                 "prepare that part again")
            present.append((path, summary, part))
    if not by_content:
        return
    total = sum(summary["bytes"] for _, summary, _ in present)
    with tqdm(total=total, unit="B", unit_scale=True, desc="check inputs",
              disable=not progress or None) as bar:
        for path, summary, part in present:
            if sha256_of(path) != summary["sha256"]:
                raise InputError(f"input file {path} is not the file part {part.label} ({part.path}) "
                                 "read (same size, other sha256): changed since; prepare that part "
                                 "again, or merge with --input-check size to accept it")
            bar.update(summary["bytes"])


def _part_store(part: Part) -> GenomeStore:
    try:
        return GenomeStore(part.path / STORE_NAME)
    except (FileNotFoundError, ValueError) as exc:
        raise InputError(f"part {part.label}: {exc}") from None


def link_or_copy(source: Path, target: Path) -> None:
    """A hard link (no bytes copied, the part untouched), or a copy across file systems."""
    try:
        os.link(source, target)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise
        shutil.copy2(source, target)


def merge_store(parts: list[Part], store: Path, bar: tqdm) -> list[dict]:
    """The parts' groups side by side in one store, with the root attributes of the whole corpus."""
    create_store(store)
    summaries = []
    for part in parts:
        source = part.path / STORE_NAME
        for summary in _part_store(part).files:
            for directory, _, names in os.walk(source / summary["group"]):
                target = store / Path(directory).relative_to(source)
                target.mkdir(parents=True, exist_ok=True)
                for name in names:
                    link_or_copy(Path(directory) / name, target / name)
            summaries.append(summary)
            bar.update(1)
    summaries.sort(key=lambda s: s["group"])
    finalize_store(store, summaries, parts[0].manifest["parameters"]["on_invalid"])
    return summaries


def merge_shards(parts: list[Part], work: Path, bar: tqdm) -> list[ShardInfo]:
    """Each split's shards of part 1, then of part 2, ..., numbered one after another."""
    shards = []
    for split in SPLITS:
        (work / split).mkdir()
        for part in parts:
            for entry in part.manifest["shards"]:
                if entry["split"] != split:
                    continue
                source = part.path / entry["path"]
                if not source.is_file() or source.stat().st_size != entry["bytes"]:
                    found = f"{source.stat().st_size} bytes" if source.is_file() else "missing"
                    raise InputError(f"{source} (part {part.label}): {found}, its manifest says "
                                     f"{entry['bytes']} bytes; prepare that part again")
                info = ShardInfo(
                    **dict(entry, path=f"{split}/{shard_name(sum(s.split == split for s in shards))}")
                )
                link_or_copy(source, work / info.path)
                shards.append(info)
                bar.update(1)
    return shards


def sum_species(parts: list[Part]) -> dict[str, SpeciesStats]:
    per_species: dict[str, SpeciesStats] = {}
    for part in parts:
        for name, figures in part.manifest["species"].items():
            stats = SpeciesStats(**figures)
            if not stats.balanced():
                raise InputError(f"{part.path} (part {part.label}): the base accounting of {name} does not "
                                 f"balance ({figures})")
            per_species.setdefault(name, SpeciesStats()).add(stats)
    return per_species


def recount_records(store: GenomeStore, per_species: dict[str, SpeciesStats]) -> dict:
    """Empty records and duplicate ids over the whole corpus, in corpus order, as one run lists them: a
    part sees only the ids of its own files. Sets each species' duplicate_ids to the corpus-wide count."""
    notes: dict = {"empty_records": [], "duplicate_ids": [], "longest_record": 0}
    seen: set[str] = set()
    empty = dict.fromkeys(per_species, 0)
    duplicates = dict.fromkeys(per_species, 0)
    for summary in store.files:
        group = store.root[summary["group"]]
        table = group["record_table"][:]  # [records, 6]: start, stop, counts
        lengths = table[:, 1] - table[:, 0]
        notes["longest_record"] = max(notes["longest_record"], int(lengths.max(initial=0)))
        for index, record_id in enumerate(group["record_names"][:, 0].tolist()):
            where = record_where(summary["file_name"], record_id, record_locator(summary["group"], index))
            if lengths[index] == 0:
                empty[summary["species"]] += 1
                notes["empty_records"].append(where)
            if record_id in seen:
                duplicates[summary["species"]] += 1
                notes["duplicate_ids"].append(where)
            seen.add(record_id)
    for name, stats in per_species.items():
        if stats.empty_records != empty[name]:
            raise InputError(f"species {name}: the parts count {stats.empty_records} empty records, "
                             f"the merged store holds {empty[name]}")
        stats.duplicate_ids = duplicates[name]
    return notes


def check_accounting(per_species: dict[str, SpeciesStats], files: list[dict],
                     shards: list[ShardInfo]) -> None:
    """Over the whole corpus: each species' input bases are its files' bases, and its samples per split
    are those its shards hold (input == kept + dropped is checked per part and by build_manifest)."""
    for name, stats in per_species.items():
        stored = sum(f["counts"]["length"] for f in files if f["species"] == name)
        if stats.input_bases != stored:
            raise InputError(f"species {name}: the parts count {stats.input_bases} input bases, "
                             f"its files in the store {stored}")
        for split in SPLITS:
            in_shards = sum(s.samples_by_species.get(name, 0) for s in shards if s.split == split)
            if stats.samples[split] != in_shards:
                raise InputError(f"species {name}: the parts count {stats.samples[split]} {split} samples, "
                                 f"their shards hold {in_shards}")


def corpus_args(parts: list[Part], out: Path) -> argparse.Namespace:
    """prepare.py's options as a one-process run of the whole corpus would record them."""
    parameters = dict(parts[0].manifest["parameters"], part=None, out=str(out))
    return argparse.Namespace(**parameters)


def build(parts: list[Part], work: Path, out: Path, progress: bool) -> dict:
    """Everything of the merged corpus inside `work`; returns its manifest."""
    started = time.perf_counter()
    items = sum(len(p.groups) + len(p.manifest["shards"]) for p in parts)
    with tqdm(total=items, unit="file", desc="merge", disable=not progress or None) as bar:
        files = merge_store(parts, work / STORE_NAME, bar)
        shards = merge_shards(parts, work, bar)
    per_species = sum_species(parts)
    store = GenomeStore(work / STORE_NAME)
    notes = recount_records(store, per_species)
    check_accounting(per_species, files, shards)
    args = corpus_args(parts, out)
    if not any(shard.split == "train" for shard in shards):
        raise InputError("no training samples in the whole corpus: "
                         f"{why_no_training_samples(per_species, notes, args)}")
    part_seconds = [p.manifest["timing_seconds"]["total"] for p in parts]
    merge_seconds = round(time.perf_counter() - started, 3)
    timing = {
        "parts": {p.label: p.manifest["timing_seconds"] for p in parts},
        "slowest_part": max(part_seconds),
        "merge": merge_seconds,
        "total": round(sum(part_seconds) + merge_seconds, 3),  # the work done, not the wall time
    }
    manifest = build_manifest(args, STORE_NAME, store, per_species, shards, notes, timing)
    manifest["skipped_files"] = parts[0].manifest["skipped_files"]
    manifest["parts"] = [{"part": p.label, "path": str(p.path.resolve()), "groups": p.groups} for p in parts]
    (work / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def run(args: argparse.Namespace) -> dict:
    check_not_overlapping(args.out, list(args.parts))
    parts = sorted((load_part(path) for path in args.parts), key=lambda p: p.manifest["part"]["part"])
    check_part_numbers(parts)
    check_same_settings(parts)
    check_coverage(parts)
    check_replaceable(args.out, args.overwrite)  # before reading every input again
    check_inputs_unchanged(parts, args.input_check == "sha256", not args.no_progress)
    work = fresh_work_dir(args.out)
    published = False
    try:
        manifest = build(parts, work, args.out, not args.no_progress)
        publish_dir(work, args.out)
        published = True
    finally:
        if not published:
            shutil.rmtree(work, ignore_errors=True)
    return manifest


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        manifest = run(args)
    except (InputError, ValueError) as exc:
        print(f"merge_parts.py: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"merge_parts.py: error: {describe_os_error(exc, args.out)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("merge_parts.py: interrupted; nothing was written", file=sys.stderr)
        return 130
    print_summary(manifest, args.out)
    slowest, merge = manifest["timing_seconds"]["slowest_part"], manifest["timing_seconds"]["merge"]
    print(f"merged {len(manifest['parts'])} parts (slowest {slowest:.1f} s) in {merge:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
