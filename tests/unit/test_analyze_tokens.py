"""tools/analyze_tokens.py and megamerge/token_analysis.py: statistics on hand-checkable cases, and
the whole tool on a tiny random MergeDNA over a tiny synthetic genome with its ground-truth BED."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from data_prep import synthetic
from megamerge.models.registry import build_model_from_preset
from megamerge.portable import load_portable, save_portable
from megamerge.sequence_embeddings import window_bounds
from megamerge.token_analysis import (
    HIST_MAX,
    Region,
    TokenAnalysisError,
    boundary_scores,
    length_stats,
    per_base_token_lengths,
    read_bed,
    region_stats,
)
from megamerge.vocabulary import encode
from tests.data_helpers import read_shards, run_prepare
from tools import analyze_tokens

WINDOW = 1000  # records of 2,500 bases: two full windows and a shorter one
SMALL = {"dim": 32, "n_heads": 2, "ffn_dim": 64, "local_encoder_layers": 2, "latent_encoder_layers": 1,
         "latent_merge_schedule": "single_layer", "latent_merge_layer": 0, "latent_decoder_layers": 1,
         "local_decoder_layers": 1, "grouping_dim": 8}


# ----------------------------------------------------------------------------- hand-checked
def test_length_stats_by_hand():
    lengths = per_base_token_lengths(np.array([0, 0, 0, 1, 2, 2]))  # tokens of 3, 1 and 2 bases
    assert lengths.tolist() == [3, 3, 3, 1, 2, 2]
    s = length_stats(lengths)
    assert (s["bases"], s["tokens"], s["mean_token_length"], s["max_token_length"]) == (6, 3.0, 2.0, 3)
    assert s["median_token_length"] == 2.0  # of 3, 1, 2
    assert s["median_token_length_per_base"] == 2.5  # of 1, 2, 2, 3, 3, 3
    assert s["mean_token_length_per_base"] == pytest.approx(14 / 6, abs=1e-4)
    assert s["histogram_per_token"][:3] == pytest.approx([1 / 3] * 3, abs=1e-6)
    assert s["histogram_per_base"][:3] == pytest.approx([1 / 6, 2 / 6, 3 / 6], abs=1e-6)
    assert sum(s["histogram_per_token"][3:]) == sum(s["histogram_per_base"][3:]) == 0


def test_long_tokens_land_in_the_last_bin():
    s = length_stats(per_base_token_lengths(np.array([0] * 20 + [1] * 4)))  # 20 bases and 4 bases
    assert len(s["histogram_per_token"]) == HIST_MAX
    assert s["histogram_per_token"][3] == s["histogram_per_token"][-1] == 0.5
    assert s["histogram_per_base"][-1] == pytest.approx(20 / 24, abs=1e-6)
    assert s["max_token_length"] == 20


def test_a_straddling_token_is_shared_in_proportion_to_its_bases():
    lengths = {"r": per_base_token_lengths(np.array([0, 0, 1, 1, 1, 1]))}
    stats = region_stats([Region("r", 0, 3, "a"), Region("r", 3, 6, "b")], lengths)
    # 2-base token + 1/4 of the 4-base one
    assert stats["a"]["tokens"] == 1.25 and stats["b"]["tokens"] == 0.75
    assert stats["a"]["max_token_length"] == 4 and stats["a"]["intervals"] == 1


def test_boundary_scores_on_a_constructed_case():
    # 20 bases; tokens start at 0, 5, 10, 13; annotation boundaries at 5 and 12 (0 and 20 are record ends)
    token_ids = {"r": np.repeat([0, 1, 2, 3], [5, 5, 3, 7])}
    regions = [Region("r", 0, 5, "x"), Region("r", 5, 12, "y"), Region("r", 12, 20, "x")]
    exact = boundary_scores(token_ids, regions, tolerance=0)
    assert (exact["token_boundaries"], exact["annotation_boundaries"]) == (3, 2)
    assert exact["precision"] == pytest.approx(1 / 3, abs=1e-6)  # only 5 sits on an annotation boundary
    assert exact["recall"] == 0.5  # 5 found, 12 not
    assert exact["f1"] == pytest.approx(0.4, abs=1e-6)
    assert exact["chance_precision"] == pytest.approx(2 / 19, abs=1e-6)
    loose = boundary_scores(token_ids, regions, tolerance=1)  # 13 is now within 1 of 12
    assert loose["precision"] == pytest.approx(2 / 3, abs=1e-6) and loose["recall"] == 1.0
    assert loose["f1"] == pytest.approx(0.8, abs=1e-6)


def test_bad_bed_lines_are_named(tmp_path: Path):
    bed = tmp_path / "bad.bed"
    bed.write_text("#header\nr\t0\t10\tx\nr\t10\tabc\ty\n")
    with pytest.raises(TokenAnalysisError, match=r"bad.bed: line 3: start and end must be integers"):
        read_bed(bed)
    bed.write_text("r\t0\t10\n")
    with pytest.raises(TokenAnalysisError, match=r"line 1: need record, start, end, class"):
        read_bed(bed)


# ---------------------------------------------------------------------------- the whole tool
@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("analyze_tokens")
    assert synthetic.main(["--out", str(root / "genomes"), "--species", "2", "--length", "5000",
                           "--records", "2", "--regions-bed", "--no-gzip", "--no-progress"]) == 0
    torch.manual_seed(0)
    model_dir = save_portable(build_model_from_preset("tiny", **SMALL), root / "model")
    return {"root": root, "model": model_dir, "fasta": root / "genomes" / "synth_sp00.fa",
            "bed": root / "genomes" / "synth_sp00.regions.bed"}


def run_tool(setup: dict, out: Path, *extra: str) -> dict:
    assert analyze_tokens.main(["--model", str(setup["model"]), "--fasta", str(setup["fasta"]),
                                "--out", str(out), "--window", str(WINDOW), "--batch-size", "2",
                                "--no-progress", *extra]) == 0
    return json.loads((out / "tokens.json").read_text())


def direct_token_lengths(setup: dict) -> dict[str, np.ndarray]:
    """The same numbers straight from the Local Encoder's assign map, one window at a time."""
    model = load_portable(setup["model"])
    records, name = {}, None
    for line in setup["fasta"].read_text().splitlines():
        if line.startswith(">"):
            name = line[1:].split()[0]
            records[name] = ""
        else:
            records[name] += line
    out = {}
    for name, seq in records.items():
        codes = torch.from_numpy(encode(seq).astype(np.int64))
        pieces = []
        for a, b in window_bounds(len(codes), WINDOW):
            with torch.no_grad():
                assign = model.local_encoder(codes[None, a:b], model.token_targets(torch.tensor([b - a])))
            pieces.append(np.bincount(assign.assign[0].numpy())[assign.assign[0].numpy()])
        out[name] = np.concatenate(pieces)
    return out


def test_tool_numbers_match_the_assign_map(setup: dict, tmp_path: Path):
    result = run_tool(setup, tmp_path / "out", "--bed", str(setup["bed"]))
    direct = direct_token_lengths(setup)
    saved = np.load(tmp_path / "out" / "per_base_token_lengths.npz")
    assert sorted(saved.files) == sorted(direct)
    for name, lengths in direct.items():
        np.testing.assert_array_equal(saved[name], lengths)
        assert result["records"][name]["tokens"] == pytest.approx((1 / lengths).sum())
        # fixed ratio: round(0.5 * bases) tokens per window (2,500 bases -> 500 + 500 + 250)
        assert result["records"][name]["tokens"] == 1250
    everything = np.concatenate(list(direct.values()))
    assert result["all"]["max_token_length"] == everything.max()
    assert result["all"]["mean_token_length_per_base"] == pytest.approx(everything.mean(), abs=1e-4)
    assert result["all"]["mean_token_length"] == 2.0
    # the BED tiles the records, so the classes' (fractional) token counts add up to all tokens
    assert sum(s["tokens"] for s in result["regions"].values()) == pytest.approx(
        result["all"]["tokens"], abs=0.01)
    assert set(result["regions"]) <= set(synthetic.REGION_TYPES) and "background" in result["regions"]


def test_tool_writes_every_field_and_the_plot(setup: dict, tmp_path: Path):
    result = run_tool(setup, tmp_path / "out", "--bed", str(setup["bed"]), "--boundary-tolerance", "2")
    assert {"model", "fasta", "bed", "window", "inference_mode", "weightings", "histogram_bins", "records",
            "all", "regions", "boundaries", "bed_records_not_in_fasta"} <= set(result)
    assert result["inference_mode"] == {**result["inference_mode"], "mode": "fixed_ratio",
                                        "eval_compression": 0.5}
    assert set(result["weightings"]) == {"per_token", "per_base"}
    stat_fields = {"bases", "tokens", "mean_token_length", "median_token_length", "max_token_length",
                   "mean_token_length_per_base", "median_token_length_per_base", "histogram_per_token",
                   "histogram_per_base"}
    for stats in [result["all"], *result["regions"].values()]:
        assert stat_fields <= set(stats)
        assert len(stats["histogram_per_token"]) == len(stats["histogram_per_base"]) == HIST_MAX
        assert sum(stats["histogram_per_base"]) == pytest.approx(1, abs=1e-4)
    boundaries = result["boundaries"]
    assert boundaries["tolerance_bases"] == 2 and 0 <= boundaries["f1"] <= 1 and boundaries["recall"] > 0
    png = (tmp_path / "out" / "token_lengths.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_compression_per_species_from_shards(setup: dict, tmp_path: Path):
    corpus = tmp_path / "corpus"
    run_prepare("--input", str(setup["root"] / "genomes"), "--out", str(corpus), "--seq-len", "301",
                "--valid-species", "synth_sp01", "--samples-per-shard", "8")
    result = run_tool(setup, tmp_path / "out", "--data", str(corpus), "--data-split", "train",
                      "--max-samples", "11")
    samples = read_shards(corpus, "train")[:11]
    lengths = np.array([len(seq) for _, seq in samples])
    species = result["species"]
    assert list(species) == ["synth_sp00"] and species["synth_sp00"]["samples"] == 11
    assert species["synth_sp00"]["bases"] == lengths.sum()
    assert species["synth_sp00"]["tokens"] == np.round(0.5 * lengths).sum()  # the fixed eval ratio
    assert result["data"]["split"] == "train"


def test_carmania_and_bad_bed_are_refused(setup: dict, tmp_path: Path, capsys):
    carmania = save_portable(build_model_from_preset("carmania-tiny", dim=32, n_heads=2, n_kv_heads=1,
                                                     ffn_dim=64, n_layers=1), tmp_path / "carmania")
    assert analyze_tokens.main(["--model", str(carmania), "--fasta", str(setup["fasta"]),
                                "--out", str(tmp_path / "c")]) == 2
    assert "carmania model, which has no learned tokenizer" in capsys.readouterr().err
    bed = tmp_path / "long.bed"
    bed.write_text("synth_sp00_chr1\t0\t99999\tbackground\n")
    assert analyze_tokens.main(["--model", str(setup["model"]), "--fasta", str(setup["fasta"]),
                                "--bed", str(bed), "--out", str(tmp_path / "b"), "--no-progress"]) == 2
    assert ("long.bed: interval synth_sp00_chr1:0-99999 ends past the record's 2500 bases"
            in capsys.readouterr().err)
