"""The pure parts of benchmarks/ablation.py: variant flags, reading metrics, token and fine-tuning
summaries, the table. The stages themselves are subprocesses of tools that have their own tests."""

from __future__ import annotations

import json

import pytest

from benchmarks.ablation import (
    MEGAMERGE_OPTIONS,
    VARIANTS,
    AblationError,
    capped_task,
    check_settings,
    finetune_summary,
    main,
    markdown_table,
    pretraining_wins,
    suite_mean,
    token_summary,
    train_flags,
    validation_losses,
)
from megamerge.training.arguments import build_parser
from megamerge.training.model_from_flags import model_config


def test_every_variant_parses_as_train_flags_and_names_its_latent_merge():
    parser = build_parser()
    for name, variant in VARIANTS.items():
        args = parser.parse_args(["--mock-data", *train_flags(name)])
        assert model_config(args).latent_merge_schedule == variant.latent_merge, name
    paper = parser.parse_args(["--mock-data", *train_flags("paper")])
    defaults = parser.parse_args(["--mock-data"])
    assert model_config(paper) == model_config(defaults), "the paper row must be train.py's defaults"


def test_one_option_variants_differ_from_the_paper_in_exactly_that_option():
    parser = build_parser()
    paper = vars(parser.parse_args(["--mock-data", *train_flags("paper")]))
    for name in MEGAMERGE_OPTIONS:
        changed = {k for k, v in vars(parser.parse_args(["--mock-data", *train_flags(name)])).items()
                   if paper[k] != v}
        assert len(changed) == 1, (name, changed)
    everything = vars(parser.parse_args(["--mock-data", *train_flags("all_megamerge")]))
    assert {k for k, v in everything.items() if paper[k] != v} == {
        "rotary_merge", "merge_selection", "amtm_normalization", "size_proportional_attention",
        "latent_merge_schedule"}


def test_unknown_variant_is_refused_by_name():
    with pytest.raises(AblationError, match="'nope'"):
        train_flags("nope")


def test_validation_losses_take_the_last_valid_record(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    rows = [{"iteration": 10, "loss": 2.0, "mtr": 0.5, "bases_per_token": 2.1},
            {"iteration": 10, "split": "valid", "loss": 1.9, "mtr": 0.4, "latent_mtr": 0.6, "amtm": 1.2,
             "perplexity": 3.5, "masked_base_accuracy": 0.4},
            {"iteration": 20, "loss": 1.5, "mtr": 0.2, "bases_per_token": 2.0},
            {"iteration": 20, "split": "valid", "loss": 1.4, "mtr": 0.1, "latent_mtr": 0.3, "amtm": 1.1,
             "perplexity": 3.2, "masked_base_accuracy": 0.45}]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = validation_losses(metrics)
    assert out["iteration"] == 20 and out["perplexity"] == 3.2 and out["train_mtr"] == 0.2
    metrics.write_text(json.dumps(rows[0]) + "\n")
    with pytest.raises(AblationError, match="no validation record"):
        validation_losses(metrics)


def _region(bases: int, tokens: float) -> dict:
    return {"bases": bases, "tokens": tokens, "mean_token_length": bases / tokens,
            "mean_token_length_per_base": bases / tokens + 0.5}


def test_token_summary_pools_repeat_classes_by_bases_and_tokens():
    tokens = {"regions": {"tandem_repeat": _region(300, 100), "low_complexity": _region(100, 20),
                          "background": _region(1000, 500), "gap": _region(50, 10)},
              "boundaries": {"f1": 0.1, "precision": 0.2, "recall": 0.3, "chance_precision": 0.01},
              "inference_mode": {"mode": "fixed_ratio"}}
    out = token_summary(tokens)
    assert out["repeat_mean_token_length"] == pytest.approx(400 / 120)
    assert out["ratio"] == pytest.approx((400 / 120) / 2.0)
    assert out["repeat_per_base"] == pytest.approx((3.5 * 300 + 5.5 * 100) / 400)
    del tokens["regions"]["low_complexity"]
    with pytest.raises(AblationError, match="low_complexity"):
        token_summary(tokens)


def _results(values: list[float]) -> dict:
    return {"metric": "mcc", "per_seed": [{"test": {"mcc": v}, "dev": {"mcc": v / 2}} for v in values]}


def test_finetune_summary_suite_mean_and_wins():
    a, b = finetune_summary(_results([0.1, 0.3])), finetune_summary(_results([0.2]))
    assert a["mean"] == pytest.approx(0.2) and a["std"] == pytest.approx(0.1414, abs=1e-4)
    assert b["std"] == 0.0 and b["dev_mean"] == pytest.approx(0.1)
    assert suite_mean({"x": a, "y": b}) == pytest.approx(0.2)
    assert suite_mean({"x": a, "y": None}) is None
    row = {"variant": "paper", "latent_merge": "per_block", "flags": ["--latent-merge-schedule", "per_block"],
           "finetune": {"x": a, "y": b, "z": a}, "scratch": {"x": b, "y": a, "z": None}}
    assert pretraining_wins(row, ["x", "y", "z"]) == (0, 2)
    table = markdown_table([row], ["x", "y", "z"])
    assert table.count("\n") == 2 and "0.200 ± 0.141 (2)" in table and "| – |" in table


def test_capped_task_links_train_and_test_and_heads_dev(tmp_path):
    src = tmp_path / "gue" / "t"
    src.mkdir(parents=True)
    for split in ("train", "dev", "test"):
        (src / f"{split}.csv").write_text("sequence,label\n" + "".join(f"ACGT,{i % 2}\n" for i in range(10)))
    capped_task(src, tmp_path / "out" / "t", 3)
    assert (tmp_path / "out" / "t" / "dev.csv").read_text().count("\n") == 4
    assert (tmp_path / "out" / "t" / "train.csv").resolve() == (src / "train.csv").resolve()
    (src / "test.csv").unlink()
    with pytest.raises(AblationError, match="test.csv"):
        capped_task(src, tmp_path / "out" / "u", 3)


def test_a_variant_directory_refuses_other_settings(tmp_path):
    check_settings(tmp_path / "v", {"train_iters": 150})
    check_settings(tmp_path / "v", {"train_iters": 150})
    with pytest.raises(AblationError, match="other settings"):
        check_settings(tmp_path / "v", {"train_iters": 100})


def test_list_variants_prints_each_variants_train_flags(capsys):
    assert main(["--list-variants"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert set(lines) == set(VARIANTS)
    for name in VARIANTS:
        assert " ".join(train_flags(name)) in lines[name]
    assert "--latent-merge-schedule single_layer" in lines["single_layer"]
