"""train.py's --species-weights and --softmask-loss-weight: defaults, and one-line refusals before
DeepSpeed starts that name the flag (and the species)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from megamerge.training.arguments import parse_args
from megamerge.training.input_checks import TrainingInputError, check_training_inputs
from tests.helpers import REPO, TRAIN, subprocess_env
from tests.mixed_corpus import write_mixed_corpus


def test_defaults_leave_training_as_it_was():
    args = parse_args(["--mock-data"])
    assert args.species_weights is None and args.softmask_loss_weight == 1.0


@pytest.mark.parametrize(("flags", "message"), [
    (["--mock-data", "--species-weights", "uniform"], "--species-weights needs --data"),
    (["--mock-data", "--softmask-loss-weight", "-1"], "--softmask-loss-weight must be a finite number >= 0"),
    (["--mock-data", "--softmask-loss-weight", "inf"], "--softmask-loss-weight must be a finite number >= 0"),
])  # fmt: skip
def test_parser_refuses_bad_flag_values(flags, message, capsys):
    with pytest.raises(SystemExit):
        parse_args(flags)
    assert message in capsys.readouterr().err


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_mixed_corpus(tmp_path_factory.mktemp("corpus"), {"a": 20, "b": 10}, seq_len=64, shards=2)


@pytest.mark.parametrize(("value", "message"), [
    ({"a": 1, "nosuch": 2},
     "--species-weights: species 'nosuch' not in the corpus's train split (its species: a, b)"),
    ({"a": 0, "b": 0},
     "--species-weights: the weights sum to 0.0; give at least one species a positive weight"),
    ("by_base", "--species-weights by_base: neither uniform nor by_bases nor an existing JSON file"),
])  # fmt: skip
def test_training_input_checks_refuse_unusable_weights(corpus, tmp_path, value, message):
    if isinstance(value, dict):
        (tmp_path / "w.json").write_text(json.dumps(value))
        value = str(tmp_path / "w.json")
    args = parse_args(["--data", str(corpus), "--seq-length", "64", "--species-weights", value])
    with pytest.raises(TrainingInputError) as refused:
        check_training_inputs(args)
    assert str(refused.value) == message


def test_cli_refuses_an_unknown_species_in_one_line_before_starting(corpus, tmp_path):
    (tmp_path / "w.json").write_text(json.dumps({"a": 1, "nosuch": 2}))
    proc = subprocess.run([sys.executable, str(TRAIN), "--data", str(corpus), "--seq-length", "64",
                           "--species-weights", str(tmp_path / "w.json")],
                          cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == ("megamerge/train.py: error: --species-weights: species 'nosuch' not in "
                                   "the corpus's train split (its species: a, b)")
