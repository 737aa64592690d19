"""Fixtures shared by several test files, and the markers each folder implies.

tests/unit/         in-process and fast (a few are marked `slow` by hand)
tests/distributed/  real multi-process runs (DeepSpeed launcher, torchrun): marked `distributed` and `slow`
tests/system/       a real SLURM cluster, end-to-end runs on real data: marked `system` and `slow`
A test marked `cuda` is skipped, with the reason, where no CUDA device is present.
"""

from pathlib import Path

import pytest
import torch

# The helper modules hold asserts too; pytest rewrites them only if told before they are imported.
pytest.register_assert_rewrite("tests.helpers", "tests.data_helpers")

from data_prep import synthetic
from tests.data_helpers import run_prepare

TESTS = Path(__file__).resolve().parent
FOLDER_MARKERS = {"distributed": ("distributed", "slow"), "system": ("system", "slow")}


def pytest_collection_modifyitems(config, items):
    for item in items:
        folder = Path(item.fspath).resolve().relative_to(TESTS).parts[0]
        for name in FOLDER_MARKERS.get(folder, ()):
            item.add_marker(name)
        if item.get_closest_marker("cuda") and not torch.cuda.is_available():
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))


@pytest.fixture
def one_thread():
    """Tiny models: a second OpenMP thread gains little and thrashes on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def synthetic_genomes(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synthetic")
    synthetic.generate(out, species=3, length=60_000, records=3, seed=1, compress=True, progress=False)
    return out


@pytest.fixture(scope="session")
def synthetic_corpus(synthetic_genomes, tmp_path_factory) -> Path:
    """3 species x 60 kb cut at 512 bp into ~22 small shards: enough for 2 ranks x 2 workers."""
    out = tmp_path_factory.mktemp("corpus") / "c"
    run_prepare(
        "--input", synthetic_genomes, "--out", out, "--seq-len", "512", "--min-len", "64",
        "--samples-per-shard", "16", "--mix-shards", "4", "--max-n-frac", "0.5",
    )  # fmt: skip
    return out
