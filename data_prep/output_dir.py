"""Where prepare.py writes, and the rules that keep it from destroying anything it did not write.

* `--out` may not be, contain, or lie inside any input (FASTA file or directory, species map,
  genome store of a re-cut): publishing replaces the output directory as a whole, so an overlap
  would delete the input. This is checked before anything is created.
* An existing non-empty `--out` is replaced (with `--overwrite`) only when it is recognisably a
  previous prepare.py output: its manifest.json has prepare.py's format and it holds nothing but
  prepare.py's own entries. Anything else is refused, naming what is in the way.
* Everything is built in a hidden directory beside `--out` and renamed into place when complete.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from pathlib import Path

from data_prep.fasta import InputError
from megamerge.output_dirs import overlap, swap_in

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "megamerge-shards"
STORE_NAME = "genomes.zarr"
SPLITS = ("train", "valid")
SHARD_NAME = re.compile(r"shard-\d{6}\.tar")
LEFTOVER_NAME = re.compile(r"\.recut-partial-\d+")  # an in-place re-cut that was killed


def check_not_overlapping(out: Path, inputs: list[Path]) -> None:
    """Refuse an output directory that is, contains or lies inside one of the inputs."""
    target = out.resolve()
    if target.parent == target:
        raise InputError(f"--out {out}: the file system root cannot be an output directory")
    found = overlap(out, inputs)
    if found is not None:
        relation, given = found
        raise InputError(f"--out {out} {relation} the input {given}; give an output directory outside every "
                         "input (the output is built beside --out and replaces it as a whole)")


def foreign_entries(out: Path) -> list[str]:
    """What in a previous output directory prepare.py did not write (names relative to it)."""
    foreign = []
    for entry in sorted(out.iterdir()):
        name = entry.name
        if name == MANIFEST_NAME and entry.is_file() and not entry.is_symlink():
            continue
        real_dir = entry.is_dir() and not entry.is_symlink()
        if name == STORE_NAME and real_dir and (entry / "zarr.json").is_file():
            continue
        if LEFTOVER_NAME.fullmatch(name) and real_dir:
            continue
        if name in SPLITS and real_dir:
            foreign += [f"{name}/{f.name}" for f in sorted(entry.iterdir())
                        if not (SHARD_NAME.fullmatch(f.name) and f.is_file() and not f.is_symlink())]
            continue
        foreign.append(name + ("/" if entry.is_dir() else ""))
    return foreign


def _is_prepare_manifest(path: Path) -> bool:
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == MANIFEST_FORMAT


def _listing(names: list[str]) -> str:
    return ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")


def check_replaceable(out: Path, overwrite: bool, in_place: bool = False) -> None:
    """Refuse to write into `out` unless it is absent, empty, or a previous prepare.py output
    (which needs --overwrite, except for an in-place re-cut that keeps its store)."""
    if out.is_symlink() and not out.exists():
        raise InputError(f"--out {out}: a symbolic link to nothing; remove it or give another directory")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"--out {out}: {parent} is a file, not a directory")
            break
    if not out.exists():
        return
    if not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a directory")
    if not any(out.iterdir()):
        return
    if not in_place and not overwrite:
        raise InputError(f"{out}: output directory exists and is not empty (use --overwrite)")
    manifest = out / MANIFEST_NAME
    # An in-place re-cut may find a bare store (no shards cut yet); anything else needs our manifest.
    if not _is_prepare_manifest(manifest) and not (in_place and not manifest.exists()):
        held = _listing(sorted(p.name for p in out.iterdir()))
        raise InputError(f"--out {out}: not a previous prepare.py output (no prepare.py {MANIFEST_NAME}; it "
                         f"holds {held}); --overwrite only replaces what prepare.py wrote: choose another "
                         "--out")
    foreign = foreign_entries(out)
    if foreign:
        raise InputError(f"--out {out}: holds files prepare.py did not write ({_listing(foreign)}); "
                         "--overwrite only replaces what prepare.py wrote: move them away or choose another "
                         "--out")


def fresh_work_dir(out: Path) -> Path:
    """The hidden build directory beside `out` (same file system, so publishing is a rename)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    work = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    return work


def in_place_work_dir(out: Path) -> Path:
    work = out / f".recut-partial-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    return work


def publish_dir(work: Path, out: Path) -> None:
    """Swap the finished build in for `out` (checked by `check_replaceable` before the build)."""
    if out.exists() and any(out.iterdir()) and foreign_entries(out):  # written into while we built
        raise InputError(f"--out {out}: files appeared during the run ({_listing(foreign_entries(out))}); "
                         "nothing was replaced")
    swap_in(work, out)


def publish_in_place(work: Path, out: Path) -> None:
    """Swap the new shards and manifest in next to the store they were cut from."""
    retired = work / "retired"
    retired.mkdir()
    for name in (*SPLITS, MANIFEST_NAME):
        if (out / name).exists():
            (out / name).rename(retired / name)
        (work / name).rename(out / name)
    shutil.rmtree(work)


def _is_output_path(path: Path, out: Path) -> bool:
    """`out`, anything in it, or the hidden build / retired directories beside it."""
    path, target = Path(os.path.abspath(path)), Path(os.path.abspath(out))
    if path == target or target in path.parents:
        return True
    beside = path.relative_to(target.parent).parts if target.parent in path.parents else ()
    return bool(beside) and beside[0].startswith(f".{target.name}.")


def describe_os_error(exc: OSError, out: Path) -> str:
    """One line for an OSError of a run: the output directory and why it cannot be written (an
    unwritable place, a file in the way, a full disk), or else the file and the reason."""
    reason = exc.strerror or str(exc)
    after = ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        reason = "no space left on the device (disk full or quota exceeded)"
        after = "; nothing was published and the partial output was removed"
    if exc.filename is None or _is_output_path(Path(os.fsdecode(exc.filename)), out):
        where = f" ({os.fsdecode(exc.filename)})" if exc.filename is not None else ""
        return f"--out {out}: cannot write the output: {reason}{where}{after}"
    return f"{os.fsdecode(exc.filename)}: {reason}{after}"
