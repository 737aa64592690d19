"""Fixtures of the system tests."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from tests.system import slurm_cluster


@pytest.fixture(scope="module")
def cluster():
    """A real single-node SLURM cluster (slurmctld, slurmd, munge) for one test module; skips where
    it cannot run (not root, no apt)."""
    reason = slurm_cluster.unavailable_reason()
    if reason:
        pytest.skip(reason)
    slurm_cluster.ensure_installed(timeout=600)
    root = Path(tempfile.mkdtemp(prefix="mm-slurm-"))  # short path: munge's socket name has a length limit
    c = slurm_cluster.SlurmCluster(root)
    try:
        c.start()
        yield c
    finally:
        pids = {name: p.pid for name, p in c.procs.items()}
        killed = c.stop()
        still = [name for name, p in c.procs.items() if p.poll() is None]
        shutil.rmtree(root, ignore_errors=True)
        assert not still, f"daemons still running after teardown: {still} (pids {pids})"
        assert not killed, f"daemons ignored SIGTERM and were killed: {killed}"
