"""Output directories (and single output files) built whole beside their final place and renamed in,
never written over.

    check_output_dir(out, inputs, overwrite, is_own_output, tool)  # before anything is read or built
    with built_then_published(out) as work: ...                     # write into `work`; swapped in at the end
    check_output_file(out, inputs, overwrite, is_own_output, tool, flag)  # the same rules for one file
    with written_then_renamed(out) as partial: ...                  # write `partial`; renamed in at the end

An output may not be, contain or lie inside an input (publishing replaces it as a whole, so an
overlap would delete the input). An existing non-empty output is replaced only with --overwrite,
and only when it is recognisably the same tool's earlier output; anything else is refused, naming
what is in the way. A failed build leaves nothing behind, and the earlier output intact.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


class OutputDirError(ValueError):
    """An output directory that cannot be written without losing something; one line."""


def overlap(out: Path, inputs: list[Path]) -> tuple[str, Path] | None:
    """("is" | "contains" | "lies inside", the input) for the first input `out` overlaps, or None;
    symbolic links are followed, so a link to an input is that input."""
    target = Path(out).resolve()
    for given in inputs:
        source = Path(given).resolve()
        if target == source:
            return "is", Path(given)
        if target in source.parents:
            return "contains", Path(given)
        if source in target.parents:
            return "lies inside", Path(given)
    return None


def refuse_overlap(out: Path, inputs: list[Path], flag: str, what: str) -> None:
    found = overlap(out, inputs)
    if found is not None:
        relation, given = found
        raise OutputDirError(f"{flag} {out} {relation} the input {given}; give {what} outside every input")


def check_output_dir(out: Path, inputs: list[Path], overwrite: bool, is_own_output: Callable[[Path], bool],
                     tool: str) -> None:
    """Refuse `out` when it overlaps an input, is a file, or is a non-empty directory that is not
    `tool`'s own earlier output (`is_own_output`) to be replaced with --overwrite."""
    refuse_overlap(out, inputs, "--out", "an output directory")
    if not out.exists():
        return
    if not out.is_dir():
        raise OutputDirError(f"--out {out}: exists and is not a directory")
    held = sorted(p.name for p in out.iterdir())
    if not held:
        return
    shown = ", ".join(held[:6]) + (f" and {len(held) - 6} more" if len(held) > 6 else "")
    if not overwrite:
        raise OutputDirError(f"--out {out}: exists and is not empty (it holds {shown}); "
                             "choose a new directory"
                             + (", or pass --overwrite to replace this earlier output of "
                                f"{tool}" if is_own_output(out) else ""))
    if not is_own_output(out):
        raise OutputDirError(f"--out {out}: not an earlier output of {tool} (it holds {shown}); "
                             f"--overwrite only replaces what {tool} wrote: choose another --out")


@contextmanager
def built_then_published(out: Path) -> Iterator[Path]:
    """A fresh hidden directory beside `out` (the same file system) to build in; on success it takes
    `out`'s place (an earlier `out` is renamed aside first and removed after), on any failure it is
    removed and `out` is as it was."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        yield work
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    swap_in(work, out)


def swap_in(work: Path, out: Path) -> None:
    """Rename the finished `work` to `out`; an earlier `out` is renamed aside first, removed after."""
    replaced = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        out.rename(replaced)
    work.rename(out)
    shutil.rmtree(replaced, ignore_errors=True)


def check_output_file(out: Path, inputs: list[Path], overwrite: bool, is_own_output: Callable[[Path], bool],
                      tool: str, flag: str) -> None:
    """check_output_dir's rules for one file given as `flag`: refuse an input, a directory, or an
    existing file unless --overwrite and it is `tool`'s own earlier output (`is_own_output`)."""
    refuse_overlap(out, inputs, flag, "an output file")
    if not out.exists():
        return
    if out.is_dir():
        raise OutputDirError(f"{flag} {out}: exists and is a directory")
    own = is_own_output(out)
    if not overwrite:
        way_out = f", or pass --overwrite to replace this earlier output of {tool}" if own else ""
        raise OutputDirError(f"{flag} {out}: exists; choose a new path{way_out}")
    if not own:
        raise OutputDirError(f"{flag} {out}: not an earlier output of {tool}; --overwrite only replaces what "
                             f"{tool} wrote: choose another {flag}")


@contextmanager
def written_then_renamed(out: Path) -> Iterator[Path]:
    """A hidden path beside `out` to write; renamed to `out` on success (replacing an earlier one in one
    step), removed on any failure, so `out` is never half-written."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.parent / f".{out.name}.partial-{os.getpid()}"
    partial.unlink(missing_ok=True)
    try:
        yield partial
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, out)
