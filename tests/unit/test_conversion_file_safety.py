"""The checkpoint converter's file handling without a checkpoint: a failed conversion leaves no
staging directory, and DeepSpeed files are unpickled only through an allow-list."""

import subprocess

import pytest
import torch


def test_failure_midway_removes_the_staging_directory(tmp_path):
    from megamerge.checkpoint_conversion.staging import staging_dir

    with pytest.raises(RuntimeError), staging_dir(tmp_path / "out") as tmp:
        (tmp / "half_written.bin").write_bytes(b"x" * 100)
        raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []


def test_deepspeed_files_are_read_without_unrestricted_unpickling(tmp_path):
    """A pickle that needs a class outside the allow-list is refused, not executed."""
    from megamerge.checkpoint_conversion import ConversionError
    from megamerge.checkpoint_conversion.safe_load import load_deepspeed_file

    path = tmp_path / "evil.pt"
    torch.save({"payload": subprocess.CompletedProcess(["true"], 0)}, path)
    with pytest.raises(ConversionError, match="refusing to unpickle"):
        load_deepspeed_file(path)
