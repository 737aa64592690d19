"""tools/compare_tokenizers.py and megamerge/token_analysis.py's boundary_changes: a hand-counted
case, then the whole tool on tiny random MergeDNA models (the same model twice, and a copy whose
merge scorers were re-drawn) over a small random FASTA."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from megamerge.models.registry import build_model_from_preset
from megamerge.portable import save_portable
from megamerge.token_analysis import HIST_MAX, TokenAnalysisError, boundary_changes, first_bases, window_gaps
from tools import compare_tokenizers

WINDOW = 500  # records of 1,200 and 700 bases: windows of 500, 500, 200 and 500, 200
SMALL = {"dim": 32, "n_heads": 2, "ffn_dim": 64, "local_encoder_layers": 2, "latent_encoder_layers": 1,
         "latent_merge_schedule": "single_layer", "latent_merge_layer": 0, "latent_decoder_layers": 1,
         "local_decoder_layers": 1, "grouping_dim": 8}


# ----------------------------------------------------------------------------- hand-counted
def test_boundary_changes_by_hand():
    # window 5: record r has windows [0, 5) and [5, 10), record s one window of 3 bases
    a = {"r": np.array([0, 0, 1, 1, 2, 3, 3, 3, 4, 4]), "s": np.array([0, 0, 0])}
    b = {"r": np.array([0, 1, 1, 2, 2, 3, 3, 4, 4, 4]), "s": np.array([0, 0, 1])}
    # gaps inside windows: r 4 + 4 (the gap before base 5 is the window edge), s 2
    # a cuts before bases 2, 4, 8 of r; b before 1, 3, 7 of r and 2 of s: no cut shared
    out = boundary_changes(a, b, window=5)
    assert out == {"positions": 10, "boundaries_a": 3, "boundaries_b": 4, "only_a": 3, "only_b": 4,
                   "boundary_change_rate": 0.7}
    swapped = boundary_changes(b, a, window=5)
    assert swapped["boundary_change_rate"] == 0.7 and swapped["only_a"] == 4
    assert boundary_changes(a, a, window=5)["boundary_change_rate"] == 0.0
    # one boundary moved by one base: two changed positions
    moved = {"r": a["r"].copy(), "s": a["s"]}
    moved["r"][3] = 2  # a's cut before base 4 now sits before base 3
    one_moved = boundary_changes(a, moved, window=5)
    assert (one_moved["only_a"], one_moved["only_b"], one_moved["boundary_change_rate"]) == (1, 1, 0.2)


def test_window_edges_are_not_positions():
    boundary, inside = window_gaps(np.array([0, 0, 1, 2, 2, 3, 3]), window=3)  # windows [0,3) [3,6) [6,7)
    assert boundary.tolist() == [False, True, True, False, True, False]
    assert inside.tolist() == [True, True, False, True, True, False]


def test_different_records_are_refused_and_max_bases_cuts_in_file_order():
    with pytest.raises(TokenAnalysisError, match="different records or lengths"):
        boundary_changes({"r": np.zeros(4, int)}, {"r": np.zeros(5, int)}, window=5)
    records = {"x": np.arange(6), "y": np.arange(4), "z": np.arange(3)}
    cut = first_bases(records, 8)
    assert list(cut) == ["x", "y"] and cut["y"].tolist() == [0, 1]
    assert first_bases(records, None) is records


# ---------------------------------------------------------------------------- the whole tool
@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("compare_tokenizers")
    rng = np.random.default_rng(0)
    fasta = root / "valid.fa"
    fasta.write_text("".join(f">{name}\n{''.join(rng.choice(list('ACGT'), n))}\n"
                             for name, n in (("r1", 1200), ("r2", 700))))
    torch.manual_seed(0)
    model = build_model_from_preset("tiny", **SMALL)
    a = save_portable(model, root / "a")
    torch.manual_seed(1)
    for merger in model.local_encoder.mergers:  # only the merge scorers change
        torch.nn.init.normal_(merger.grouping.weight, std=0.5)
    b = save_portable(model, root / "b")
    return {"a": a, "b": b, "fasta": fasta, "root": root}


def run_tool(setup: dict, a: str, b: str, out: Path, *extra: str) -> dict:
    assert compare_tokenizers.main(["--model", str(setup[a]), "--model", str(setup[b]), "--fasta",
                                    str(setup["fasta"]), "--out", str(out), "--window", str(WINDOW),
                                    "--no-progress", *extra]) == 0
    return json.loads(out.read_text())


def test_the_same_model_twice_changes_nothing(setup: dict, tmp_path: Path):
    result = run_tool(setup, "a", "a", tmp_path / "same.json")
    assert result["bases"] == 1900 and result["positions"] == 1900 - 5  # 5 windows
    assert result["boundary_change_rate"] == 0.0 and result["only_a"] == result["only_b"] == 0
    assert result["a"]["boundaries"] == result["b"]["boundaries"] > 0
    assert result["a"]["histogram_per_base"] == result["b"]["histogram_per_base"]


def test_new_merge_scorers_move_boundaries(setup: dict, tmp_path: Path):
    result = run_tool(setup, "a", "b", tmp_path / "ab.json")
    assert 0 < result["boundary_change_rate"] <= 1
    # the fixed ratio makes round(0.5 * bases) tokens per window in both models: 250 + 250 + 100 and
    # 250 + 100, so 950 tokens, 945 cuts inside the 5 windows; every cut one model moved is one the other lost
    assert result["a"]["boundaries"] == result["b"]["boundaries"] == 945
    assert result["only_a"] == result["only_b"] > 0
    assert result["boundary_change_rate"] == pytest.approx(2 * result["only_a"] / result["positions"])
    for side in ("a", "b"):
        stats = result[side]
        assert stats["eval_compression"] == 0.5 and stats["tokens"] == 950
        assert len(stats["histogram_per_base"]) == HIST_MAX
        assert sum(stats["histogram_per_base"]) == pytest.approx(1, abs=1e-4)
    assert result["a"]["histogram_per_base"] != result["b"]["histogram_per_base"]


def test_max_bases_and_bad_flags(setup: dict, tmp_path: Path, capsys):
    result = run_tool(setup, "a", "b", tmp_path / "cut.json", "--max-bases", "1300")
    assert result["records"] == {"r1": 1200, "r2": 100} and result["positions"] == 1300 - 4
    with pytest.raises(SystemExit):
        compare_tokenizers.main(["--model", str(setup["a"]), "--fasta", str(setup["fasta"]),
                                 "--out", str(tmp_path / "x.json")])
    assert "--model must be given exactly twice" in capsys.readouterr().err
    carmania = save_portable(build_model_from_preset("carmania-tiny", dim=32, n_heads=2, n_kv_heads=1,
                                                     ffn_dim=64, n_layers=1), tmp_path / "carmania")
    assert compare_tokenizers.main(["--model", str(setup["a"]), "--model", str(carmania), "--fasta",
                                    str(setup["fasta"]), "--out", str(tmp_path / "c.json")]) == 2
    assert "carmania model, which has no learned tokenizer" in capsys.readouterr().err
