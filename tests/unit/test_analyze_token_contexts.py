"""tools/analyze_tokens.py --contexts (issue 28, item 2: Figure 2 on real sequence): contexts from a
CSV and from the soft-masked / upper-case bases of a FASTA, the Jensen-Shannon distances between
them and the split-half baseline, on hand-checkable cases and a tiny random MergeDNA."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon

from megamerge.models.registry import build_model_from_preset
from megamerge.portable import load_portable, save_portable
from megamerge.token_analysis import (
    TokenAnalysisError,
    length_stats,
    per_base_token_lengths,
    tokenize_records,
)
from megamerge.token_contexts import parse_contexts
from megamerge.token_distance import js_distance, pairwise_js, split_half_js
from megamerge.vocabulary import encode
from tests.unit.test_analyze_tokens import SMALL
from tools import analyze_tokens

WINDOW = 256
CSV_SEQUENCES = ["ACGTTGCAAGGCTTAACCGGTATA" * 3, "acgtNNacgtACGTACGGGCCCAATT", "GATTACA" * 9, "CCGGAATT" * 4]


# ----------------------------------------------------------------------------- hand-checked
def test_js_distance_by_hand():
    assert js_distance([0.2, 0.3, 0.5], [2, 3, 5]) == 0  # the same distribution, unnormalised
    assert js_distance([1, 0, 0], [0, 0.5, 0.5]) == 1  # disjoint supports: one bit, the maximum
    # p = (1, 0), q = (1/2, 1/2): m = (3/4, 1/4); KL(p||m) = log2(4/3), KL(q||m) = 1/2 log2(2/3) + 1/2 log2 2
    divergence = (math.log2(4 / 3) + 0.5 * math.log2(2 / 3) + 0.5) / 2
    assert js_distance([1, 0], [0.5, 0.5]) == pytest.approx(math.sqrt(divergence), abs=1e-12)
    assert js_distance([1, 0], [0.5, 0.5]) == pytest.approx(0.557923, abs=1e-6)
    rng = np.random.default_rng(1)
    for _ in range(20):
        p, q = rng.random(16), rng.random(16)
        assert js_distance(p, q) == pytest.approx(jensenshannon(p, q, base=2), abs=1e-12)
    # scipy says NaN for some near-identical pairs (a divergence rounded below 0); the distance is ~0
    near = [js_distance(p, p + rng.random(16) * 1e-9) for p in rng.random((300, 16))]
    assert np.isfinite(near).all() and max(near) < 1e-3
    with pytest.raises(ValueError, match="non-negative histograms"):
        js_distance([0, 0], [1, 0])


def units_of(rng: np.random.Generator, count: int) -> list[np.ndarray]:
    return [rng.integers(1, 8, size=int(rng.integers(20, 60))) for _ in range(count)]


def test_split_half_is_seeded_and_falls_between_0_and_1():
    units = units_of(np.random.default_rng(0), 40)
    first, again, other = split_half_js(units, 5, seed=3), split_half_js(units, 5, seed=3), split_half_js(
        units, 5, seed=4)
    assert first == again and first["values"] != other["values"]
    assert first["units"] == 40 and first["splits"] == len(first["values"]) == 5
    assert first["max"] == max(first["values"]) and first["mean"] == pytest.approx(np.mean(first["values"]),
                                                                                 abs=1e-6)
    assert 0 < first["mean"] < 0.5
    # the halves: by hand for the first draw of the seed
    order = np.random.default_rng(3).permutation(40)
    halves = [np.concatenate([units[i] for i in part]) for part in (order[:20], order[20:])]
    expected = js_distance(*(length_stats(h)["histogram_per_base"] for h in halves))
    assert first["values"][0] == pytest.approx(expected, abs=1e-6)
    lonely = split_half_js(units[:1], 5, seed=3)
    assert lonely["mean"] is None and lonely["values"] == [] and "fewer than 2 units" in lonely["note"]


def test_pairwise_distances_and_ratios():
    hists = {"a": [1, 0], "b": [0.5, 0.5], "c": [1, 0]}
    baselines = {"a": {"mean": 0.1}, "b": {"mean": 0.25}, "c": {"mean": None}}
    distance, ratio = pairwise_js(hists, baselines)
    assert distance["a"]["b"] == distance["b"]["a"] == pytest.approx(0.557923, abs=1e-6)
    assert distance["a"]["c"] == 0 and "a" not in distance["a"]
    assert ratio["a"]["b"] == pytest.approx(0.557923 / 0.25, abs=1e-3)  # the larger baseline of the two
    assert ratio["b"]["c"] == pytest.approx(0.557923 / 0.25, abs=1e-3)  # c has none: b's alone
    _, no_ratio = pairwise_js({"x": [1, 0], "y": [0, 1]}, {"x": {"mean": 0.0}, "y": {"mean": None}})
    assert no_ratio["x"]["y"] is None


# ---------------------------------------------------------------------------- the whole tool
@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("contexts")
    torch.manual_seed(0)
    model_dir = save_portable(build_model_from_preset("tiny", **SMALL), root / "model")
    csv = root / "seqs.csv"
    rows = "".join(f"{i % 2},{s},x\n" for i, s in enumerate(CSV_SEQUENCES))
    csv.write_text("label,sequence,extra\n" + rows)  # the sequence column need not come first
    rng = np.random.default_rng(0)
    records = {}
    for name, length, starts in (("chr1", 700, (20, 240, 400, 600)), ("chr2", 450, (10, 100, 250, 380))):
        seq = "".join(rng.choice(list("ACGT"), size=length))
        for start in starts:  # soft-masked stretches of 30 bases, one across a window edge (256)
            seq = seq[:start] + seq[start:start + 30].lower() + seq[start + 30:]
        records[name] = seq
    fasta = root / "masked.fa"
    fasta.write_text("".join(f">{name} test\n{seq[:300]}\n{seq[300:]}\n" for name, seq in records.items()))
    return {"root": root, "model": model_dir, "csv": csv, "fasta": fasta, "records": records}


def run_tool(setup: dict, out: Path, *contexts: str, extra: tuple[str, ...] = ()) -> dict:
    assert analyze_tokens.main(["--model", str(setup["model"]), "--out", str(out), "--window", str(WINDOW),
                                "--batch-size", "3", "--no-progress", *extra, "--contexts", *contexts]) == 0
    return json.loads((out / "tokens.json").read_text())


def test_csv_context_tokenizes_each_sequence_whole(setup: dict, tmp_path: Path, one_thread):
    result = run_tool(setup, tmp_path / "out", f"seqs={setup['csv']}")
    stats = result["contexts"]["seqs"]
    model = load_portable(setup["model"]).eval()
    direct = []
    for seq in CSV_SEQUENCES:
        codes = torch.from_numpy(encode(seq).astype(np.int64))[None]  # [1, n]
        with torch.no_grad():
            assign = model.local_encoder(codes, model.token_targets(torch.tensor([codes.shape[1]]))).assign[0]
        lengths = per_base_token_lengths(assign.numpy())
        direct.append(lengths[encode(seq) != 4])  # N bases belong to no context
    expected = length_stats(np.concatenate(direct))
    for key in ("bases", "max_token_length", "mean_token_length_per_base", "histogram_per_base"):
        assert stats[key] == expected[key], key
    assert stats["counts"] == {"format": "csv", "rows": 4, "sequences_used": 4, "sequences_skipped": 0,
                               "bases_used": sum(len(s) for s in CSV_SEQUENCES) - 2, "n_bases_left_out": 2}
    assert stats["unit"] == "sequence" and stats["units"] == 4 and stats["selection"] == "all"
    assert result["js_distance"] == {"seqs": {}} and result["split_half_js"]["seqs"]["units"] == 4
    assert result["inference_mode"]["mode"] == "fixed_ratio" and result["model"] == str(setup["model"])
    png = (tmp_path / "out" / "token_lengths_by_context.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_merge_selection_reaches_the_tokenizer(setup: dict, tmp_path: Path, one_thread):
    fasta = f"genome={setup['fasta']}"
    own = run_tool(setup, tmp_path / "own", fasta)
    global_rank = run_tool(setup, tmp_path / "global", fasta, extra=("--merge-selection", "global_rank"))
    assert own["inference_mode"]["merge_selection"] == "per_window"
    assert global_rank["inference_mode"]["merge_selection"] == "global_rank"
    # One ranking across the window lets some windows keep more tokens than others: other merges.
    histograms = [r["contexts"]["genome"]["histogram_per_base"] for r in (own, global_rank)]
    assert histograms[0] != histograms[1]


def test_csv_rows_are_drawn_at_random_and_the_rest_counted(setup: dict, tmp_path: Path, one_thread):
    result = run_tool(setup, tmp_path / "out", f"seqs={setup['csv']}",
                      extra=("--max-sequences-per-context", "2", "--seed", "5"))
    counts = result["contexts"]["seqs"]["counts"]
    assert (counts["rows"], counts["sequences_used"], counts["sequences_skipped"]) == (4, 2, 2)
    picked = np.random.default_rng(5).choice(4, size=2, replace=False)
    assert counts["bases_used"] == sum(len(CSV_SEQUENCES[i]) - 2 * (i == 1) for i in picked)


def test_fasta_soft_masked_and_unmasked_bases_split_one_tokenization(setup: dict, tmp_path: Path, one_thread):
    """The model tokenizes whole records; each base's token length then goes to its context."""
    fasta = setup["fasta"]
    result = run_tool(setup, tmp_path / "out", f"every={fasta}", f"repeats={fasta}:softmasked",
                      f"unique={fasta}:unmasked", extra=("--split-block", "100"))
    model = load_portable(setup["model"])
    records = {name: encode(seq) for name, seq in setup["records"].items()}
    token_ids = tokenize_records(model, records, WINDOW, 3, torch.device("cpu"), progress=False)
    lengths = np.concatenate([per_base_token_lengths(token_ids[name]) for name in records])
    masked = np.concatenate([[ch.islower() for ch in seq] for seq in setup["records"].values()])
    assert masked.sum() == 8 * 30
    for name, part in (("every", lengths), ("repeats", lengths[masked]), ("unique", lengths[~masked])):
        stats = result["contexts"][name]
        expected = length_stats(part)
        assert stats["bases"] == expected["bases"] and stats["histogram_per_base"] == expected[
            "histogram_per_base"], name
        assert stats["counts"]["bases_used"] == stats["counts"]["selected_bases"] == part.size
        assert stats["counts"]["bases_skipped"] == 0 and stats["counts"]["file_bases"] == 1150
    # windows of 700 bases: 256, 256, 188 -> blocks of 100, 100, 56 | 100, 100, 56 | 100, 88; of 450: 256, 194
    # -> 100, 100, 56 | 100, 94; no 30-base stretch fills a block, so all 13 hold unmasked bases
    assert result["split_half_js"]["unique"]["units"] == 13
    assert result["split_half_js"]["repeats"]["units"] <= 8 * 2
    assert set(result["js_distance"]["repeats"]) == {"every", "unique"}
    assert result["js_distance"]["repeats"]["unique"] == pytest.approx(
        js_distance(result["contexts"]["repeats"]["histogram_per_base"],
                    result["contexts"]["unique"]["histogram_per_base"]), abs=1e-6)
    assert result["warnings"] == []


def test_max_bases_takes_whole_windows_and_counts_the_rest(setup: dict, tmp_path: Path, one_thread):
    fasta = setup["fasta"]
    result = run_tool(setup, tmp_path / "out", f"unique={fasta}:unmasked",
                      extra=("--max-bases-per-context", "300"))
    counts = result["contexts"]["unique"]["counts"]
    assert 300 <= counts["bases_used"] < 300 + WINDOW and 2 <= counts["windows_tokenized"] < 5
    assert counts["bases_used"] + counts["bases_skipped"] == counts["selected_bases"] == 1150 - 240


def test_split_half_values_depend_on_the_seed_only(setup: dict, tmp_path: Path, one_thread):
    contexts = (f"seqs={setup['csv']}", f"unique={setup['fasta']}:unmasked")
    first = run_tool(setup, tmp_path / "a", *contexts, extra=("--split-block", "50", "--seed", "1"))
    again = run_tool(setup, tmp_path / "b", *contexts, extra=("--split-block", "50", "--seed", "1"))
    other = run_tool(setup, tmp_path / "c", *contexts, extra=("--split-block", "50", "--seed", "2"))
    assert first["split_half_js"] == again["split_half_js"] and first["js_distance"] == again["js_distance"]
    assert first["split_half_js"]["unique"]["values"] != other["split_half_js"]["unique"]["values"]
    ratio = first["js_ratio_to_split_half"]["seqs"]["unique"]
    baseline = max(first["split_half_js"][n]["mean"] for n in ("seqs", "unique"))
    assert ratio == pytest.approx(first["js_distance"]["seqs"]["unique"] / baseline, abs=1e-3)


def test_an_all_lower_case_fasta_is_flagged(setup: dict, tmp_path: Path, capsys, one_thread):
    lower = tmp_path / "lower.fa"
    lower.write_text(">r\n" + setup["records"]["chr1"].lower() + "\n")
    result = run_tool(setup, tmp_path / "out", f"repeats={lower}:softmasked")
    assert result["warnings"] == [(f"--contexts repeats: every base of {lower} is lower case, so "
                                   ":softmasked is the whole file: its case marks no repeats")]
    assert "warning: --contexts repeats: every base" in capsys.readouterr().err
    out = tmp_path / "empty"
    assert analyze_tokens.main(["--model", str(setup["model"]), "--out", str(out), "--no-progress",
                                "--contexts", f"unique={lower}:unmasked"]) == 2
    assert (f"--contexts unique: {lower} has no unmasked bases to count (every base is lower case, so its "
            f"case marks no repeats; unique={lower} takes all its bases)") in capsys.readouterr().err


# ---------------------------------------------------------------------------------- bad input
def test_bad_specs_are_named(setup: dict, tmp_path: Path):
    fasta, csv = setup["fasta"], setup["csv"]
    with pytest.raises(TokenAnalysisError, match=r"unknown selection ':repeats'.*choose :all, :softmasked"):
        parse_contexts([f"r={fasta}:repeats"])
    with pytest.raises(TokenAnalysisError, match=r"the name 'r' is given more than once"):
        parse_contexts([f"r={fasta}:softmasked", f"r={fasta}:unmasked"])
    with pytest.raises(TokenAnalysisError, match=r"expected NAME=FILE"):
        parse_contexts([str(fasta)])
    with pytest.raises(TokenAnalysisError, match=r"is a CSV, whose sequences are taken whole"):
        parse_contexts([f"c={csv}:softmasked"])
    with pytest.raises(TokenAnalysisError, match=r"--contexts m: .*missing.fa: no such file"):
        parse_contexts([f"m={tmp_path / 'missing.fa'}:unmasked"])
    odd = tmp_path / "odd:name.fa"  # a colon in the file's own name
    odd.write_text(">r\nACGT\n")
    assert parse_contexts([f"o={odd}"])[0].path == odd and parse_contexts([f"o={odd}:all"])[0].path == odd


def test_bad_csv_input_names_the_file_and_row(setup: dict, tmp_path: Path, capsys):
    no_column = tmp_path / "nocol.csv"
    no_column.write_text("seq,label\nACGT,1\n")
    bad_row = tmp_path / "badrow.csv"
    bad_row.write_text("sequence,label\nACGT,1\nACGU,0\n")
    empty_row = tmp_path / "emptyrow.csv"
    empty_row.write_text("sequence,label\nACGT,1\n,0\n")
    all_n = tmp_path / "alln.csv"
    all_n.write_text("sequence\nNNNN\nnnRY\n")
    for path, message in ((all_n, f"{all_n}: the 2 sequences drawn are all N"),
                          (no_column, f"{no_column}: CSV input needs a 'sequence' column"),
                          (bad_row, f"{bad_row}: row 2 (line 3): invalid character 'U'"),
                          (empty_row, f"{empty_row}: row 2 (line 3): empty sequence")):
        assert analyze_tokens.main(["--model", str(setup["model"]), "--out", str(tmp_path / "o"),
                                    "--no-progress", "--contexts", f"x={path}"]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_flags_that_do_not_go_together(setup: dict, tmp_path: Path, capsys):
    base = ["--model", str(setup["model"]), "--out", str(tmp_path / "o")]
    for extra in (["--fasta", str(setup["fasta"]), "--contexts", f"a={setup['csv']}"], [],
                  ["--bed", "x.bed", "--contexts", f"a={setup['csv']}"], ["--split-block", "0", "--contexts",
                                                                          f"a={setup['csv']}"]):
        with pytest.raises(SystemExit) as exit_info:
            analyze_tokens.main(base + extra)
        assert exit_info.value.code == 2
    assert "--split-block must be >= 1" in capsys.readouterr().err
