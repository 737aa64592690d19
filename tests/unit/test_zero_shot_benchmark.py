"""benchmarks/zero_shot.py: the Markov log-likelihood ratio against a hand computation, the choice of
Markov orders, the AUROC table from given scores, the verdict, the flags, and one end-to-end run on a
tiny genome (2 training iterations) that writes every output and leaves BENCHMARKS.md alone."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks import zero_shot
from benchmarks.benchmarks_md import BENCHMARKS
from benchmarks.markov_baseline import snv_log_likelihood_ratio
from benchmarks.zero_shot import (
    FAMILY_PRESETS,
    MARKOV_LLR,
    markdown_table,
    markov_settings,
    metric_rows,
    model_name,
    parse_args,
    verdict,
)
from megamerge.models.registry import family_of_preset
from megamerge.portable import read_portable_config, read_portable_weights
from megamerge.training.arguments import build_parser
from megamerge.training.model_from_flags import model_config
from megamerge.variant_scoring.run import ScoredVariants
from megamerge.variant_scoring.scorers import EMBEDDING_DISTANCE, MASKED_MARGINAL
from megamerge.variant_scoring.tally import Tally
from megamerge.variant_scoring.variants import Variant
from megamerge.vocabulary import encode

# order-1 counts [previous base, next base] (A, C, G, T)
COUNTS = np.array([[1, 2, 3, 4], [5, 6, 7, 8], [1, 1, 1, 1], [2, 0, 0, 2]])
ALPHA = 0.5


def p(previous: str, base: str) -> float:
    row = COUNTS["ACGT".index(previous)]
    return (row["ACGT".index(base)] + ALPHA) / (row.sum() + 4 * ALPHA)


def test_markov_llr_is_the_hand_computed_ratio_of_the_terms_the_snv_touches():
    contig = encode("ACGTA")
    # G>A at offset 2: the term of the variant base (after C) and of the next base (T, after it) change
    hand = math.log(p("C", "A") * p("A", "T") / (p("C", "G") * p("G", "T")))
    assert snv_log_likelihood_ratio(COUNTS, ALPHA, 1, contig, 2, encode("A")[0]) == pytest.approx(hand)
    # at the contig's first base no context precedes it: only the next base's term is left
    hand = math.log(p("T", "C") / p("A", "C"))
    assert snv_log_likelihood_ratio(COUNTS, ALPHA, 1, contig, 0, encode("T")[0]) == pytest.approx(hand)
    # an N next to the variant drops the terms whose k + 1 bases hold it
    with_n = encode("ACGNA")
    hand = math.log(p("C", "T") / p("C", "G"))
    assert snv_log_likelihood_ratio(COUNTS, ALPHA, 1, with_n, 2, encode("T")[0]) == pytest.approx(hand)
    # order 0: the base frequencies alone
    frequencies = np.array([[10, 20, 30, 40]])
    hand = math.log((40 + ALPHA) / (30 + ALPHA))
    assert snv_log_likelihood_ratio(frequencies, ALPHA, 0, contig, 2, encode("T")[0]) == pytest.approx(hand)


def test_markov_orders_auto_takes_the_lowest_validation_perplexity_and_repeats_are_dropped():
    # (order, alpha) -> [summed NLL, correct, bases]: (2, 0.1) is the best of all; at k = 3, alpha 0.01
    nll = {0: 9.0, 1: 8.0, 2: 7.0, 3: 7.5}
    stats = {(k, a): [nll[k] + (0.0 if (k, a) in ((2, 0.1), (3, 0.01)) else 0.2), 0, 10]
             for k in range(4) for a in (0.01, 0.1, 1.0)}
    settings = markov_settings(stats, [None, 3, 2], auto_max_order=3)
    assert [(s["order"], s["alpha"]) for s in settings] == [(2, 0.1), (3, 0.01)]
    assert settings[0]["chosen"].startswith("order and smoothing")
    assert settings[0]["valid_perplexity"] == pytest.approx(math.exp(7.0 / 10))
    # auto looks no further than its own maximum order
    assert [s["order"] for s in markov_settings(stats, [None], auto_max_order=1)] == [1]


def scored(scores: list[list[float]], labels: list[int], chroms: list[str], columns) -> ScoredVariants:
    variants = [Variant(chrom, i + 1, "A", "C", i + 1, label)
                for i, (chrom, label) in enumerate(zip(chroms, labels))]
    return ScoredVariants(variants, np.array(scores, dtype=np.float64), columns, Tally(), Tally())


def test_metric_rows_and_table_from_given_scores():
    labels = [1, 1, 0, 0, 1, 0]
    chroms = ["chr1", "chr1", "chr1", "chr1", "chr2", "chr2"]
    # masked marginal: motif-breaking variants are the less likely ones (read negated): AUROC 1;
    # embedding distance: motif-breaking variants are the closer ones: AUROC 0
    scores = [[-5, 0.1], [-4, 0.2], [-1, 0.8], [0, 0.9], [-3, 0.3], [-2, 0.7]]
    result = scored(scores, labels, chroms, (MASKED_MARGINAL, EMBEDDING_DISTANCE))
    rows = metric_rows("MergeDNA pre-trained", result, held_out_records={"chr2"})
    reversed_auprc = (1 / 4 + 2 / 5 + 3 / 6) / 3  # the positives ranked 4th, 5th and 6th
    assert [(r["score"], r["auroc"], r["auprc"]) for r in rows] == [
        ("masked_marginal", 1.0, 1.0), ("embedding_distance", 0.0, pytest.approx(reversed_auprc))]
    assert [(r["held_out_auroc"], r["held_out_labelled"]) for r in rows] == [(1.0, 2), (0.0, 2)]
    assert all(r["labelled"] == 6 and r["positives"] == 3 for r in rows)
    # ties and a held-out subset of one class only: AUROC 0.5 and no held-out figure
    markov = scored([[-1.0]] * 6, labels, ["chr1"] * 5 + ["chr2"], (MARKOV_LLR,))
    rows += metric_rows("order-2 Markov", markov, held_out_records={"chr2"})
    assert (rows[-1]["auroc"], rows[-1]["held_out_auroc"], rows[-1]["held_out_labelled"]) == (0.5, None, 0)
    table = markdown_table(rows).splitlines()
    assert len(table) == 2 + len(rows)
    assert table[2] == "| MergeDNA pre-trained | `masked_marginal` | 1.000 | 1.000 | 1.000 | 1.000 | 6 (3) |"
    assert table[4] == "| order-2 Markov | `markov_llr` | 0.500 | 0.500 | – | – | 6 (3) |"


def test_verdict_compares_the_masked_marginal_with_random_init_and_the_best_markov_order():
    def rows(trained: float, random_init: float, markov: list[float]) -> list[dict]:
        out = [{"model": model_name("mergedna", True), "score": "masked_marginal", "auroc": trained},
               {"model": model_name("mergedna", True), "score": "embedding_distance", "auroc": 0.99},
               {"model": model_name("mergedna", False), "score": "masked_marginal", "auroc": random_init}]
        return out + [{"model": f"order-{k} Markov", "score": "markov_llr", "auroc": auroc}
                      for k, auroc in enumerate(markov)]

    assert "beats both baselines" in verdict(rows(0.8, 0.5, [0.6, 0.7]))
    assert "beats random init only" in verdict(rows(0.65, 0.5, [0.6, 0.7]))
    assert "0.700 for the best Markov order" in verdict(rows(0.65, 0.5, [0.6, 0.7]))
    assert "beats neither" in verdict(rows(0.4, 0.5, [0.6]))
    assert "No verdict" in verdict(rows(0.8, 0.5, []))
    assert "No verdict" in verdict(rows(0.8, 0.5, [0.6])[1:])


def test_each_family_preset_is_a_train_py_model_of_that_family():
    parser = build_parser()
    for family, preset in FAMILY_PRESETS.items():
        config = model_config(parser.parse_args(["--mock-data", "--model", preset]))
        assert family_of_preset(preset).name == family
        assert family_of_preset(preset).config_class is type(config)


@pytest.mark.parametrize(("flags", "message"), [
    (["--families", "mergedna,hyena"], "--families"),
    (["--markov-k", "auto,x"], "--markov-k"),
    (["--markov-k", "-1"], "--markov-k"),
    (["--valid-frac", "0"], "--valid-frac"),
    (["--variants", "1"], "--variants"),
    (["--train-minutes", "1"], "--train-minutes"),
    (["--train-minutes", "5", "--train-iters", "3"], "not allowed with"),
])
def test_bad_flags_are_refused_by_name(flags: list[str], message: str, capsys):
    with pytest.raises(SystemExit):
        parse_args(flags)
    assert message in capsys.readouterr().err


def tiny_run_flags(out: Path) -> list[str]:
    return ["--out", str(out), "--families", "mergedna", "--train-iters", "2", "--nproc", "1",
            "--genome-length", "60000", "--records", "8", "--variants", "24", "--seq-length", "128",
            "--markov-k", "auto,2", "--markov-max-order", "3", "--no-write"]


def test_one_command_trains_scores_and_reports_without_touching_benchmarks_md(tmp_path: Path, one_thread,
                                                                              capsys):
    before = BENCHMARKS.read_bytes()
    assert zero_shot.main(tiny_run_flags(tmp_path)) == 0
    assert BENCHMARKS.read_bytes() == before

    facts = json.loads((tmp_path / "zero_shot.json").read_text())
    models = {(r["model"], r["score"]) for r in facts["rows"]}
    assert {(model, score) for model in ("MergeDNA pre-trained", "MergeDNA random init")
            for score in ("masked_marginal", "embedding_distance")} <= models
    markov_orders = [m["order"] for m in facts["markov"]]
    assert 2 in markov_orders and all(0 <= k <= 3 for k in markov_orders)
    assert len(facts["rows"]) == 4 + len(markov_orders)
    for row in facts["rows"]:
        assert 0.0 <= row["auroc"] <= 1.0 and row["labelled"] == 24 and row["positives"] == 12, row
    assert facts["training"]["mergedna"]["iterations"] == 2
    assert facts["held_out_variants"] > 0  # chr2 is held out, and it carries variants
    assert (tmp_path / "zero_shot.md").read_text().startswith(f"## {zero_shot.SECTION}\n")

    for tsv in ("mergedna_pre_trained.tsv", "mergedna_random_init.tsv", "order_2_markov.tsv"):
        lines = (tmp_path / "scores" / tsv).read_text().splitlines()
        assert lines[0].startswith("chrom\tpos\tref\talt\t") and len(lines) == 1 + 24, tsv
    # random init: the trained model's config, its own (untrained) weights
    trained, random_init = tmp_path / "mergedna" / "portable", tmp_path / "mergedna" / "random_init"
    assert read_portable_config(random_init)["model_config"] == read_portable_config(trained)["model_config"]
    trained_weights, random_weights = read_portable_weights(trained), read_portable_weights(random_init)
    assert trained_weights.keys() == random_weights.keys()
    assert any(not torch.equal(trained_weights[k], random_weights[k]) for k in trained_weights)

    # the same command again stops before it rebuilds anything: the trained run stays as it was
    files = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert zero_shot.main(tiny_run_flags(tmp_path)) == 2
    assert f"{tmp_path / 'mergedna' / 'checkpoints'} holds an earlier run" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == files


def test_skip_train_without_a_trained_model_is_refused_by_path(tmp_path: Path, capsys):
    flags = tiny_run_flags(tmp_path)
    assert zero_shot.main([*flags, "--skip-train"]) == 2
    assert f"no trained mergedna model at {tmp_path / 'mergedna' / 'portable'}" in capsys.readouterr().err
    # the genome it made is the one these flags describe: other flags are refused before anything runs
    assert zero_shot.main([*flags, "--skip-train", "--seed", "5"]) == 2
    assert "was generated with" in capsys.readouterr().err
