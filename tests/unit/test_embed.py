"""tools/embed.py: store layout and shapes, equality with `model.encode`, windowing, CSV input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from megamerge.models import MergeDNA, MergeDNAConfig
from megamerge.portable import load_portable, save_portable
from megamerge.vocabulary import encode_tensor
from tools.embed import main

WINDOW = 96
RECORDS = {"short": 40, "exactly_window": WINDOW, "long": 250}  # the long one is cut into 96 + 96 + 58


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("embed") / "model"
    save_portable(MergeDNA(MergeDNAConfig.from_preset("tiny")), out,
                  extra={"training_args": {"seq_length": 128}})
    return out


@pytest.fixture(scope="module")
def sequences() -> dict[str, str]:
    rng = np.random.default_rng(0)
    return {name: "".join(rng.choice(list("ACGT"), n)) for name, n in RECORDS.items()}


@pytest.fixture(scope="module")
def store(model_dir, sequences, tmp_path_factory):
    import zarr

    work = tmp_path_factory.mktemp("embed_run")
    fasta = work / "seqs.fa"
    # lower case and an N: what real FASTA holds
    text = {k: (v[:5].lower() + "N" + v[6:]) if k == "short" else v for k, v in sequences.items()}
    sequences.update(text)
    fasta.write_text("".join(f">{name} description\n{seq[:60]}\n{seq[60:]}\n" for name, seq in text.items()))
    assert main(["--model", str(model_dir), "--input", str(fasta), "--out", str(work / "e.zarr"),
                 "--per-token", "--window", str(WINDOW), "--batch-size", "2", "--no-progress"]) == 0
    return zarr.open_group(str(work / "e.zarr"), mode="r")


@pytest.fixture(scope="module")
def model(model_dir):
    return load_portable(model_dir)


def test_store_shapes(store):
    names = list(RECORDS)
    S, D = len(names), 128
    assert list(store["ids"][:]) == names
    assert store["mean"].shape == (S, D) and store["mean"].dtype == np.float32
    lengths, num_tokens = store["lengths"][:], store["num_tokens"][:]
    assert list(lengths) == [RECORDS[n] for n in names]
    assert store["base_offsets"].shape == (S + 1,) and store["base_offsets"][-1] == lengths.sum()
    assert store["assignment"].shape == (lengths.sum(),)
    assert store["tokens"].shape == (num_tokens.sum(), D)
    assert store["token_offsets"][-1] == num_tokens.sum()
    assert store.attrs["window"] == WINDOW and store.attrs["per_token"] is True


@torch.no_grad()
def _encode(model, seq: str):
    hidden, assign, valid = model.encode(encode_tensor(seq)[None])
    return hidden[0, valid[0]], assign[0]


def _rows(store, i: int):
    t0, t1 = store["token_offsets"][i:i + 2]
    b0, b1 = store["base_offsets"][i:i + 2]
    return store["tokens"][t0:t1], store["assignment"][b0:b1], store["mean"][i]


@pytest.mark.parametrize("index", [0, 1])
def test_embeddings_equal_model_encode(store, model, sequences, index):
    name = list(RECORDS)[index]
    tokens, assignment, mean = _rows(store, index)
    hidden, assign = _encode(model, sequences[name])
    assert tokens.shape == tuple(hidden.shape)
    np.testing.assert_allclose(tokens, hidden.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(mean, hidden.mean(0).numpy(), atol=1e-5, rtol=0)
    assert np.array_equal(assignment, assign.numpy())


def test_long_sequence_is_windowed(store, model, sequences):
    tokens, assignment, mean = _rows(store, 2)
    seq = sequences["long"]
    parts = [_encode(model, seq[a:a + WINDOW]) for a in range(0, len(seq), WINDOW)]
    hidden = torch.cat([h for h, _ in parts])
    offsets = np.cumsum([0] + [len(h) for h, _ in parts])
    np.testing.assert_allclose(tokens, hidden.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(mean, hidden.mean(0).numpy(), atol=1e-5, rtol=0)
    expected = np.concatenate([a.numpy() + off for (_, a), off in zip(parts, offsets)])
    assert np.array_equal(assignment, expected)
    assert assignment.max() == len(tokens) - 1 and np.all(np.diff(assignment) >= 0)


def test_gue_csv_input_without_per_token(model_dir, tmp_path):
    import zarr

    csv = tmp_path / "dev.csv"
    csv.write_text("sequence,label\nACGTACGTTTGACCA,1\nGGGCCCAAATTTACGTAC,0\nACGTN,1\n")
    assert main(["--model", str(model_dir), "--input", str(csv), "--out", str(tmp_path / "c.zarr"),
                 "--no-progress"]) == 0
    store = zarr.open_group(str(tmp_path / "c.zarr"), mode="r")
    assert list(store["ids"][:]) == ["0", "1", "2"] and list(store["labels"][:]) == ["1", "0", "1"]
    assert store["mean"].shape == (3, 128) and "tokens" not in store and store.attrs["window"] == 128


def test_bad_input_is_one_line_and_writes_nothing(model_dir, tmp_path, capsys):
    bad = tmp_path / "bad.fa"
    bad.write_text(">x\nACGTXXACGT\n")
    assert main(["--model", str(model_dir), "--input", str(bad), "--out", str(tmp_path / "b.zarr"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "invalid character" in err[0]
    assert not (tmp_path / "b.zarr").exists()


def test_a_bad_csv_row_is_named_as_finetune_names_it(model_dir, tmp_path, capsys):
    """Issue 25, item 6: row counted from 1 and its file line, as tools/finetune.py says them."""
    csv = tmp_path / "bad.csv"
    csv.write_text("sequence,label\nACGTACGT,1\nACGXXT,0\n")
    assert main(["--model", str(model_dir), "--input", str(csv), "--out", str(tmp_path / "b.zarr"),
                 "--no-progress"]) == 2
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert f"{csv}: row 2 (line 3): " in err and "invalid character" in err
