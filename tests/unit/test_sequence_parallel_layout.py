"""--sequence-parallel-size is checked before any process group exists (one line naming the flags),
and the sequence-parallel layout helpers, in-process."""

from __future__ import annotations

import pytest

from megamerge.parallel.process_groups import data_parallel_size, rank_of
from megamerge.training.arguments import parse_args
from megamerge.training.ds_config import ConfigError
from megamerge.training.model_from_flags import check_parallel_layout, model_config


def _check(world: int, *flags: str) -> None:
    args = parse_args(["--mock-data", "--model", "tiny", *flags])
    check_parallel_layout(args, model_config(args), world)


@pytest.mark.parametrize("world,flags,message", [
    (4, ["--sequence-parallel-size", "2", "--tensor-model-parallel-size", "2"],
     "--sequence-parallel-size 2 composes with data parallelism and ZeRO only, not with --tensor-model"),
    (4, ["--sequence-parallel-size", "2", "--pipeline-model-parallel-size", "2"],
     "--pipeline-model-parallel-size 2"),
    (3, ["--sequence-parallel-size", "2"], "world size 3 is not divisible by SP = 2"),
    (8, ["--sequence-parallel-size", "8"],
     "--sequence-parallel-size 8 must divide the number of attention heads (4)"),
    (2, ["--sequence-parallel-size", "0"], "--sequence-parallel-size must be >= 1, got 0"),
])
def test_unsupported_layouts_are_refused_in_one_line(world, flags, message):
    with pytest.raises(ConfigError) as e:
        _check(world, *flags)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_sequence_parallel_ranks_sit_between_tp_and_dp():
    assert data_parallel_size(8, 1, 1, 4) == 2
    # 8 ranks, SP 4 x DP 2: a sequence group is 4 adjacent ranks (one node's NVLink)
    assert [rank_of(0, 0, 0, 1, 2, s, 4) for s in range(4)] == [0, 1, 2, 3]
    assert [rank_of(0, d, 0, 1, 2, 0, 4) for d in range(2)] == [0, 4]
    _check(4, "--sequence-parallel-size", "2")  # SP 2 x DP 2 is fine
    _check(2, "--sequence-parallel-size", "2", "--compile")  # compiled blocks, split after
