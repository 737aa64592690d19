"""A corpus prepared in parts: which input files part K of N reads (`prepare.py --part K/N`).

Every part scans the same inputs, so each knows the whole corpus's file list; a file keeps its
group number in that list ("000003" is the fourth input file whichever part reads it). A part's
store groups, sample metadata and sample keys are therefore those of a one-process run, and
data_prep/merge_parts.py joins the parts by moving them side by side.

Files are dealt largest first, each to the part with the fewest bytes so far (ties go to the lower
part), so the parts take about equally long; with at least N files no part is empty. A part reads
its files in input order.
"""

from __future__ import annotations

import argparse
import heapq
import re


def parse_part(text: str) -> tuple[int, int]:
    """'K/N' -> (K, N), 1 <= K <= N; an argparse type."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected K/N (part K of N, counting from 1), got {text!r}")
    part, parts = int(match[1]), int(match[2])
    if not 1 <= part <= parts:
        raise argparse.ArgumentTypeError(f"part {part}/{parts}: K must be between 1 and N")
    return part, parts


def part_of_each_file(sizes: list[int], parts: int) -> list[int]:
    """The part (1-based) of each file, given the files' sizes in input order."""
    loads = [(0, part) for part in range(1, parts + 1)]  # (bytes so far, part): a min-heap
    owner = [0] * len(sizes)
    for index in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        load, part = heapq.heappop(loads)
        owner[index] = part
        heapq.heappush(loads, (load + sizes[index], part))
    return owner


def files_of_part(sizes: list[int], part: int, parts: int) -> list[int]:
    """Indices (input order) of the files part `part` of `parts` reads."""
    return [index for index, owner in enumerate(part_of_each_file(sizes, parts)) if owner == part]


def group_name(index: int) -> str:
    """The store group of the input file at `index` of the corpus's input order."""
    return f"{index:06d}"
