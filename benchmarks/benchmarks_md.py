"""Replace one `## Section` of BENCHMARKS.md in place, leaving the other sections alone, so each
benchmark script owns exactly its own section."""

from __future__ import annotations

import platform
import re
from pathlib import Path

import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"
HEADER = ("# Benchmarks\n\nEvery number is a median over repeated runs, measured side by side in one run of "
          "the command shown.\n")


def cpu_model() -> str:
    """The CPU's model name where Linux reports it (the project's machines change between sessions,
    and timings with them), else the architecture."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({platform.machine()})"
    return platform.processor() or platform.machine()


def machine_line() -> str:
    return (f"{cpu_model()}, {torch.get_num_threads()} torch threads, "
            f"torch {torch.__version__}, Python {platform.python_version()}")


def update_section(title: str, body: str, path: Path = BENCHMARKS) -> None:
    text = path.read_text() if path.exists() else HEADER
    section = f"## {title}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.DOTALL | re.MULTILINE)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1)
    else:
        text = text.rstrip() + "\n\n" + section
    path.write_text(text.rstrip() + "\n")


def _subsection_pattern(subsection: str) -> re.Pattern:
    """A `### ` subsection, up to the next heading."""
    return re.compile(rf"^### {re.escape(subsection)}.*?(?=^##|\Z)", re.DOTALL | re.MULTILINE)


def current_subsection(subsection: str, path: Path = BENCHMARKS) -> str:
    """The subsection as BENCHMARKS.md holds it now ("" if absent), for a script that rewrites the
    whole section around another script's subsection to carry it over."""
    match = _subsection_pattern(subsection).search(path.read_text()) if path.exists() else None
    return match.group(0).strip() + "\n" if match else ""


def update_subsection(section: str, subsection: str, body: str, path: Path = BENCHMARKS) -> None:
    """Replace (or append) `### subsection` inside `## section`, leaving the rest of it alone."""
    text = path.read_text()
    found = re.search(rf"^## {re.escape(section)}\n.*?(?=^## |\Z)", text, re.DOTALL | re.MULTILINE)
    if found is None:
        raise SystemExit(f"{path}: no '## {section}' section to add to (run its section's benchmark first)")
    old = found.group(0)
    new = _subsection_pattern(subsection).sub("", old).rstrip() + "\n\n" + body.strip() + "\n\n"
    path.write_text(text.replace(old, new, 1))
