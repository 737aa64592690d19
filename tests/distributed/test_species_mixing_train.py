"""train.py with --species-weights and --softmask-loss-weight on 2 data-parallel ranks: the drawn
species are logged cumulatively (metrics.jsonl and TensorBoard), the flags are recorded, and a run
stopped and resumed reproduces the uninterrupted one, losses and species counts alike."""

from __future__ import annotations

import json

from tests.helpers import CPU_CONFIG, describe, read_metrics, run_train
from tests.mixed_corpus import write_mixed_corpus


def test_species_weighted_softmask_weighted_run_logs_counts_and_resumes_exactly(tmp_path):
    write_mixed_corpus(tmp_path / "corpus", {"big": 200, "mid": 60, "small": 20}, seq_len=128, shards=4,
                       valid_samples=8)
    (tmp_path / "weights.json").write_text(json.dumps({"big": 1, "mid": 1, "small": 2}))
    common = ["--ds_config", str(CPU_CONFIG), "--data", "corpus", "--model", "tiny", "--seq-length", "128",
              "--lr", "1e-3", "--lr-warmup-iters", "2", "--log-interval", "1", "--num-workers", "1",
              "--micro-batch-size", "2", "--global-batch-size", "4", "--train-iters", "4",
              "--eval-interval", "100", "--eval-iters", "1", "--species-weights", "weights.json",
              "--softmask-loss-weight", "0.1"]
    reference = run_train(2, [*common, "--save", "ref", "--tensorboard-dir", "tb"], tmp_path)
    assert reference.returncode == 0, describe(reference)
    stopped = run_train(2, [*common, "--save", "run", "--exit-interval", "2"], tmp_path)
    assert stopped.returncode == 0, describe(stopped)
    resumed = run_train(2, [*common, "--save", "run", "--load", "run"], tmp_path)
    assert resumed.returncode == 0, describe(resumed)

    ref, got = read_metrics(tmp_path / "ref"), read_metrics(tmp_path / "run")
    assert sorted(ref) == sorted(got) == [1, 2, 3, 4]
    for it in ref:
        assert sum(ref[it]["samples_by_species"].values()) == ref[it]["consumed_samples"] == 4 * it
        assert got[it]["samples_by_species"] == ref[it]["samples_by_species"], it
        for key in ("loss", "mtr", "latent_mtr", "amtm"):
            assert got[it][key] == ref[it][key], (it, key)
    recorded = json.loads((tmp_path / "ref" / "run_config.json").read_text())["args"]
    assert recorded["species_weights"] == "weights.json" and recorded["softmask_loss_weight"] == 0.1

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    species_tags = [t for t in events.Tags()["scalars"] if t.startswith("train/samples_by_species/")]
    assert species_tags and {t.rsplit("/", 1)[1] for t in species_tags} <= {"big", "mid", "small"}
    assert sum(events.Scalars(t)[-1].value for t in species_tags) == 16
