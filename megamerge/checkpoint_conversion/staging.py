"""All-or-nothing output directories: write into a hidden sibling, rename into place at the end.

The sibling lives in the same parent so the final `os.replace` is a rename on one filesystem.
On any exception (including KeyboardInterrupt) the sibling is removed, so a failed conversion
leaves nothing behind.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from megamerge.output_dirs import built_then_published

from .errors import ConversionError


def check_output_free(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConversionError(f"--out {out} already exists and is not empty; choose a new directory")


@contextmanager
def staging_dir(out: str | Path):
    out = Path(out)
    check_output_free(out)
    with built_then_published(out) as work:
        yield work
