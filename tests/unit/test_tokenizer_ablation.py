"""benchmarks/tokenizer_ablation.py on a micro MergeDNA and a tiny corpus (two synthetic species, the
second held out): every tokenizer's entry, the learned one equal to train.py's own validation
(training/evaluation.evaluate), random merges reproducible under a seed and unlike the learned ones,
fixed merges on the chunk grid, resuming, and the fine-tuning part with the learned and random merges."""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math

import pytest
import torch

from benchmarks import tokenizer_ablation
from benchmarks.tokenizer_ablation import EVAL_METRICS, check_inputs, evaluate_tokenizer, main, parse_args
from data_prep import synthetic
from megamerge.models.mergedna.spec import MERGEDNA_SPEC
from megamerge.portable import load_portable
from megamerge.training.batches import ValidBatches
from megamerge.training.evaluation import evaluate
from megamerge.training.objective import PretrainingObjective
from tests.data_helpers import run_prepare
from tests.unit.finetune_tasks import gc_task, micro_mergedna

MICRO, SAMPLES, RANDOM_SEEDS = 4, 12, 2  # 3 whole micro-batches, as train.py's --eval-iters 3 scores


@contextlib.contextmanager
def threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("tokenizer_ablation")
    synthetic.generate(root / "genomes", species=2, length=6000, records=1, seed=1, compress=False,
                       progress=False)
    corpus = root / "corpus"
    run_prepare("--input", str(root / "genomes" / "synth_sp00.fa"), str(root / "genomes" / "synth_sp01.fa"),
                "--out", str(corpus), "--seq-len", "128", "--valid-species", "synth_sp01",
                "--samples-per-shard", "8")
    return {"root": root, "corpus": corpus, "model": micro_mergedna(root / "model")}


def flags(inputs: dict, out, *extra: str) -> list[str]:
    return ["--model", str(inputs["model"]), "--data", str(inputs["corpus"]), "--out", str(out),
            "--max-valid-samples", str(SAMPLES), "--micro-batch-size", str(MICRO),
            "--random-seeds", str(RANDOM_SEEDS), "--no-progress", *extra]


@pytest.fixture(scope="module")
def ablation(inputs) -> dict:
    with threads(1):
        assert main(flags(inputs, inputs["root"] / "out")) == 0
    return json.loads((inputs["root"] / "out" / "ablation.json").read_text())


def test_every_tokenizer_has_its_numbers(inputs, ablation):
    for name in ("learned", "random", "fixed"):
        entry = ablation[name]
        for key in EVAL_METRICS:
            assert math.isfinite(entry[key]), (name, key)
        assert entry["samples"] == SAMPLES and entry["scored_bases"] > 0
        assert entry["masked_base_perplexity"] > 1 and 0 <= entry["masked_base_accuracy"] <= 1
    for name in ("random", "fixed"):
        change = (ablation[name]["mtr"] - ablation["learned"]["mtr"]) / ablation["learned"]["mtr"]
        assert ablation[name]["mtr_relative_change"] == pytest.approx(change)
    random = ablation["random"]
    assert [r["rng_seed"] for r in random["per_seed"]] == list(range(RANDOM_SEEDS))
    assert random["mtr"] == pytest.approx(sum(r["mtr"] for r in random["per_seed"]) / RANDOM_SEEDS)
    assert ablation["settings"]["held_out_species"] == ["synth_sp01"]
    assert ablation["settings"]["seq_length"] == 128  # the corpus's
    table = (inputs["root"] / "out" / "ablation.md").read_text()
    assert all(f"| {row}" in table for row in ("learned |", f"random ({RANDOM_SEEDS} seeds) |", "fixed |"))


def test_learned_entry_is_train_py_validation(inputs, ablation, tmp_path):
    """The same model, data, seed and micro-batches through training/evaluation.evaluate (one gloo
    rank, as train.py calls it) give the learned entry's numbers exactly."""
    model = load_portable(inputs["model"])
    assert model.cfg.merge_decisions == "learned"
    objective = PretrainingObjective(model)
    args = argparse.Namespace(mock_data=False, data=str(inputs["corpus"]), seq_length=128, seed=1234,
                              eval_iters=SAMPLES // MICRO)
    store = torch.distributed.FileStore(str(tmp_path / "store"), 1)
    torch.distributed.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        with threads(1):
            expected = evaluate(objective, objective, ValidBatches(args, MICRO, 1, 0), 1234,
                                torch.device("cpu"), MERGEDNA_SPEC)
    finally:
        torch.distributed.destroy_process_group()
    learned = ablation["learned"]
    for key in MERGEDNA_SPEC.loss_keys:
        assert learned[key] == expected[key], key
    assert learned["masked_base_perplexity"] == expected["perplexity"]
    assert learned["masked_base_accuracy"] == expected["masked_base_accuracy"]


def test_random_merges_are_reproducible_and_unlike_the_learned(inputs, ablation):
    args = parse_args(flags(inputs, inputs["root"] / "unused"))
    check_inputs(args)
    with threads(1):
        again = evaluate_tokenizer(load_portable(inputs["model"]), "random", 0, args)
    first, second = ablation["random"]["per_seed"]
    for key in EVAL_METRICS:
        assert again[key] == first[key], key
    assert first["mtr"] != second["mtr"]  # another seed, other merges
    assert first["mtr"] != ablation["learned"]["mtr"]
    assert first["chunk_boundary_agreement"] != ablation["learned"]["chunk_boundary_agreement"]
    # fixed merges at L = N/2 are the chunk grid exactly; learned (at random init) and random are not
    assert ablation["fixed"]["chunk_boundary_agreement"] == 1.0
    assert ablation["learned"]["chunk_boundary_agreement"] < 0.9
    assert ablation["random"]["chunk_boundary_agreement"] < 0.9


def test_a_rerun_resumes_and_other_settings_are_refused(inputs, ablation, monkeypatch, capsys):
    def refuse(*_):
        raise AssertionError("a finished evaluation ran again")

    monkeypatch.setattr(tokenizer_ablation, "evaluate_tokenizer", refuse)
    out = inputs["root"] / "out"
    assert main(flags(inputs, out)) == 0
    assert json.loads((out / "ablation.json").read_text()) == ablation
    assert main(flags(inputs, out, "--seed", "7")) == 2
    assert "written with other settings" in capsys.readouterr().err


def test_finetune_part_runs_each_tokenizer_and_pairs_them(inputs, tmp_path):
    """One real tools/finetune.py run (random merges); the learned run's results are already there,
    as a resumed run finds them, so the stage must skip it (a subprocess costs ~10 s of imports)."""
    task = gc_task(tmp_path / "gue" / "toy" / "0", "binary", sizes={"train": 32, "dev": 24, "test": 24})
    out = tmp_path / "out"
    learned = out / "finetune" / "learned" / "toy" / "0"
    learned.mkdir(parents=True)
    finished = {"metric": "mcc", "settings": {"seeds": [0], "merge_decisions": "learned"},
                "per_seed": [{"seed": 0, "dev": {"mcc": 0.5}, "test": {"mcc": 0.25}}]}
    (learned / "results.json").write_text(json.dumps(finished))
    with threads(1):
        assert main(flags(inputs, out, "--tokenizers", "learned", "--finetune-tasks", "toy/0",
                          "--gue", str(tmp_path / "gue"), "--finetune-seeds", "0", "--train-rows", "32",
                          "--dev-rows", "16", "--epochs", "1")) == 0
    record = json.loads((out / "ablation.json").read_text())
    assert set(record) == {"settings", "learned", "finetune"}
    row = record["finetune"]["tasks"]["toy/0"]
    assert row["learned"]["mean"] == 0.25 and row["learned"]["seeds"] == [0.25]  # not run again
    results = json.loads((out / "finetune" / "random" / "toy/0" / "results.json").read_text())
    assert results["settings"]["merge_decisions"] == "random" and results["settings"]["seeds"] == [0]
    assert results["n_dev"] == 16 and results["n_train"] == 32  # dev capped, train rows bounded
    assert row["random"]["seeds"] == [results["per_seed"][0]["test"]["mcc"]]
    assert row["random_minus_learned"] == pytest.approx(row["random"]["mean"] - 0.25)
    with open(out / "tasks" / "toy/0" / "dev.csv", newline="") as f:
        assert len(list(csv.reader(f))) == 1 + 16
    assert (out / "tasks" / "toy/0" / "test.csv").resolve() == (task / "test.csv").resolve()
    assert "| toy/0 | 0.250 ± 0.000 (1) |" in (out / "ablation.md").read_text()


def test_global_rank_variant_reranks_the_learned_scores_and_restores_the_model(inputs):
    args = parse_args(flags(inputs, inputs["root"] / "unused", "--tokenizers", "learned,learned_global_rank"))
    check_inputs(args)
    model = load_portable(inputs["model"])
    with threads(1):
        per_window = evaluate_tokenizer(model, "learned", None, args)
        global_rank = evaluate_tokenizer(model, "learned_global_rank", None, args)
    assert model.cfg.merge_selection == "per_window"
    assert global_rank["merge_decisions"] == "learned_global_rank"
    assert global_rank["mtr"] != per_window["mtr"]  # other pairs merge once windows may differ
