"""Models trained at long N downstream (issue 30, item 5): tools/embed.py windows their inputs at the
training length the portable records, and tools/finetune.py runs them at the task's own length."""

from __future__ import annotations

import numpy as np
import torch

from megamerge.finetune.run import run
from megamerge.portable import load_portable, save_portable
from megamerge.vocabulary import encode_tensor
from tests.unit.finetune_tasks import gc_task, micro_mergedna
from tools.embed import main as embed_main
from tools.finetune import build_parser

TRAINED_AT = 2048  # "long" for a micro model; the code paths do not depend on the number


def long_model(path):
    """micro_mergedna, saved as the converter saves a run pre-trained at TRAINED_AT bases."""
    model = load_portable(micro_mergedna(path.with_name(path.name + "_plain")))
    return save_portable(model, path, extra={"training_args": {"seq_length": TRAINED_AT}})


def test_embed_windows_at_the_training_length_and_a_lone_window_is_one_pass(tmp_path, one_thread):
    import zarr

    model_dir = long_model(tmp_path / "model")
    rng = np.random.default_rng(0)
    seqs = {"short": "".join(rng.choice(list("ACGT"), TRAINED_AT)),
            "long": "".join(rng.choice(list("ACGT"), 2 * TRAINED_AT + 100))}
    fasta = tmp_path / "in.fa"
    fasta.write_text("".join(f">{k}\n{v}\n" for k, v in seqs.items()))
    out = tmp_path / "e.zarr"
    assert embed_main(["--model", str(model_dir), "--input", str(fasta), "--out", str(out), "--no-progress",
                       "--per-base", "unmerge"]) == 0
    store = zarr.open_group(str(out), mode="r")
    assert store.attrs["window"] == TRAINED_AT
    a, b = store["base_offsets"][0:2]
    assert b - a == TRAINED_AT
    # a sequence of exactly the training length is one window: equal to one forward of the model
    model = load_portable(model_dir)
    with torch.no_grad():
        hidden, assign, _ = model.encode(encode_tensor(seqs["short"])[None])
    np.testing.assert_allclose(store["per_base"][a:b], hidden[0, assign[0]].numpy(), atol=1e-5)
    c, d = store["base_offsets"][1:3]
    assert d - c == len(seqs["long"])


def test_finetune_runs_a_long_model_at_the_task_length(tmp_path, one_thread):
    model_dir = long_model(tmp_path / "model")
    task = gc_task(tmp_path / "task", "binary", sizes={"train": 16, "dev": 8, "test": 8})  # 24-48 bases
    options = build_parser().parse_args(["--model", str(model_dir), "--task", str(task), "--out",
                                         str(tmp_path / "ft"), "--epochs", "1", "--seeds", "1",
                                         "--batch-size", "8", "--no-progress"])
    record = run(options)
    assert record["n_test"] == 8 and np.isfinite(record["per_seed"][0]["test"]["auroc"])
