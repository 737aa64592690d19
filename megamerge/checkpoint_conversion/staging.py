"""All-or-nothing output directories: write into a hidden sibling, rename into place at the end.

The sibling lives in the same parent so the final `os.replace` is a rename on one filesystem.
On any exception (including KeyboardInterrupt) the sibling is removed, so a failed conversion
leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from .errors import ConversionError


def check_output_free(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConversionError(f"--out {out} already exists and is not empty; choose a new directory")


@contextmanager
def staging_dir(out: str | Path):
    out = Path(out)
    check_output_free(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if out.is_dir():
            out.rmdir()  # empty (checked above)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
