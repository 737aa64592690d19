"""FASTA -> zarr genome store -> WebDataset shards. The command-line entry points are `prepare.py` and
`synthetic.py`; the other modules hold one concept each so the loaders and tests can import them."""

import os


def one_blas_thread() -> None:
    """For the data_prep commands, before numpy is imported: its OpenBLAS otherwise starts a busy-waiting
    thread per core on import (its cost: BENCHMARKS.md), and data preparation does no linear algebra.
    Worker processes inherit it."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
