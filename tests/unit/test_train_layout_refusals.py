"""train.py refuses parallel layouts that cannot work before it creates any process group: run
in-process with a faked WORLD_SIZE, it exits 2 and says what to change."""

from megamerge.train import main
from tests.helpers import TINY_ARGS

# The flags of tests/distributed/test_parallel_train.py's runs: only the layout flags below differ.
ITERS = 3
COMMON = [*TINY_ARGS, "--seq-length", "128", "--micro-batch-size", "2", "--global-batch-size", "4",
          "--train-iters", str(ITERS), "--lr", "2e-4", "--clip-grad", "0", "--eval-interval", "100",
          "--eval-iters", "1"]


def _fails(monkeypatch, capsys, world: int, *flags) -> str:
    monkeypatch.setenv("WORLD_SIZE", str(world))
    code = main([*COMMON, *flags])
    assert code == 2
    return capsys.readouterr().err


def test_zero2_with_pipeline_points_to_zero1_pp(monkeypatch, capsys):
    err = _fails(monkeypatch, capsys, 2, "--pipeline-model-parallel-size", "2")
    assert "zero1_pp.json" in err


def test_heads_not_divisible_by_tp(monkeypatch, capsys):
    err = _fails(monkeypatch, capsys, 3, "--tensor-model-parallel-size", "3", "--global-batch-size", "2")
    assert "attention heads (4)" in err


def test_ffn_not_divisible_by_tp(monkeypatch, capsys):
    err = _fails(monkeypatch, capsys, 4, "--tensor-model-parallel-size", "4", "--ffn-hidden-size", "350",
                 "--global-batch-size", "2")
    assert "FFN width (350)" in err


def test_world_size_not_divisible_by_tp_times_pp(monkeypatch, capsys):
    err = _fails(monkeypatch, capsys, 3, "--tensor-model-parallel-size", "2")
    assert "not divisible by TP x PP" in err
