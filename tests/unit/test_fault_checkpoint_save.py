"""What a rank says and leaves behind when it cannot write its part of a checkpoint (issue 19, row 7).
The real full disk, with 2 DeepSpeed ranks, is tests/system/test_fault_checkpoint_full_disk.py."""

from __future__ import annotations

import errno

from megamerge.training.checkpointing import describe_failed_save, disk_is_full


def partial_checkpoint(tmp_path, latest: str | None):
    (tmp_path / "global_step4").mkdir()
    (tmp_path / "global_step4" / "mp_rank_00_model_states.pt").write_bytes(b"half")
    if latest:
        (tmp_path / latest).mkdir()
        (tmp_path / "latest").write_text(latest)


def test_enospc_anywhere_in_the_chain_is_a_full_disk(tmp_path):
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("basic_ios::clear: iostream error") from inner
    except RuntimeError as outer:
        assert disk_is_full(outer, tmp_path)
    assert not disk_is_full(RuntimeError("basic_ios::clear: iostream error"), tmp_path)  # this disk has room


def test_a_failed_save_removes_the_partial_step_and_names_the_last_complete_one(tmp_path):
    partial_checkpoint(tmp_path, latest="global_step2")
    message = describe_failed_save(tmp_path, "global_step4", OSError(errno.ENOSPC, "No space left on device"))
    assert message.startswith(
        f"cannot write checkpoint {tmp_path / 'global_step4'}: no space left on the device (")
    assert f"removed the partial global_step4; {tmp_path / 'latest'} still names global_step2" in message
    assert "\n" not in message
    assert not (tmp_path / "global_step4").exists() and (tmp_path / "global_step2").is_dir()


def test_other_failures_say_what_failed_in_one_line(tmp_path):
    partial_checkpoint(tmp_path, latest=None)
    message = describe_failed_save(tmp_path, "global_step4", PermissionError("denied\n" + "detail " * 100))
    assert ": PermissionError: denied (" in message and "there is no earlier checkpoint" in message
    assert "\n" not in message and not (tmp_path / "global_step4").exists()
