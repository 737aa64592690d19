"""tools/embed.py --per-base, --layer, --pool and --overlap (issue 29, item 2): stitched windows,
per-base shapes, the layer choice and pooling, for MergeDNA and CARMANIA, on micro models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from megamerge.embedding_store import new_store
from megamerge.finetune.heads import mergedna_base_states
from megamerge.portable import load_portable
from megamerge.vocabulary import encode_tensor
from tests.unit.finetune_tasks import micro_carmania, micro_mergedna
from tools.embed import main

WINDOW, OVERLAP = 64, 32  # MergeDNA: blocks of 32 bases, each the centre of a 64-base window
LEFT, RIGHT = OVERLAP // 2, OVERLAP - OVERLAP // 2


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("embed_models")
    return {"mergedna": micro_mergedna(root / "mergedna"), "carmania": micro_carmania(root / "carmania")}


def random_dna(n: int, seed: int) -> str:
    return "".join(np.random.default_rng(seed).choice(list("ACGT"), n))


def run_embed(tmp_path: Path, model: Path, records: dict[str, str], *flags: str):
    """main() on a FASTA of `records`; the store, opened with zarr alone."""
    import zarr

    fasta = tmp_path / "in.fa"
    fasta.write_text("".join(f">{name}\n{seq}\n" for name, seq in records.items()))
    out = tmp_path / f"e{len(list(tmp_path.glob('*.zarr')))}.zarr"
    assert main(["--model", str(model), "--input", str(fasta), "--out", str(out), "--no-progress",
                 *flags]) == 0
    return zarr.open_group(str(out), mode="r")


def rows(store, name: str, i: int, offsets: str = "base_offsets") -> np.ndarray:
    a, b = store[offsets][i:i + 2]
    return store[name][a:b]


@torch.no_grad()
def alone(model, seq: str, source: str) -> np.ndarray:
    """Per-base states [N, D] of `seq` encoded as one window by itself, not through the embedding code."""
    ids = encode_tensor(seq)[None]
    if source == "local-decoder":
        return mergedna_base_states(model, ids)[0].numpy()
    assert model.cfg.merge_theta is None  # the paper's unmerge: a plain gather by the base -> token map
    hidden, assign, _ = model.encode(ids)
    return hidden[0, assign[0]].numpy()


@pytest.mark.parametrize("source", ["unmerge", "local-decoder"])
def test_mergedna_stitched_base_is_its_state_in_the_window_centred_on_it(models, tmp_path, source):
    """The documented stitching: block [a, a + 32) of a long sequence is read from the 64-base window
    starting 16 bases before it. Every interior base is at least 16 bases from both edges of that
    window, and its stitched state equals its state in that window encoded alone."""
    seq = random_dna(300, seed=1)
    store = run_embed(tmp_path, models["mergedna"], {"long": seq}, "--per-base", source,
                      "--window", str(WINDOW), "--overlap", str(OVERLAP),
                      "--batch-size", "1")  # 10 windows: two groups of 8 batches
    stitched = store["per_base"][:]
    model = load_portable(models["mergedna"])
    stride = WINDOW - OVERLAP
    checked = 0
    for block in range(0, len(seq), stride):
        start = max(block - LEFT, 0)
        end = min(start + WINDOW, len(seq))
        expected = alone(model, seq[start:end], source)
        for i in range(block, min(block + stride, len(seq))):
            if LEFT <= i < len(seq) - RIGHT:  # interior: its window reaches 16 bases either side
                assert i - start >= LEFT and end - 1 - i >= RIGHT
            np.testing.assert_allclose(stitched[i], expected[i - start], atol=1e-5, rtol=0)
            checked += 1
    assert checked == len(seq)
    # Not vacuous: base 48 (the start of block 48..80, window 32..96) sits 32 bases from the start of
    # the previous window (0..64) and 16 from its end, and its state there differs.
    neighbour = alone(model, seq[0:WINDOW], source)
    assert np.abs(neighbour[48] - stitched[48]).max() > 1e-3


@pytest.mark.parametrize("source", ["unmerge", "local-decoder"])
def test_overlap_window_minus_one_gives_every_base_a_window_centred_exactly_on_it(models, tmp_path, source):
    """Issue 29's statement word for word: each interior base's stitched state equals its state in
    a single window centred on it (an odd window, overlap window - 1: one window per base)."""
    seq, window = random_dna(70, seed=2), 33
    half = window // 2
    store = run_embed(tmp_path, models["mergedna"], {"s": seq}, "--per-base", source, "--window", str(window),
                      "--overlap", str(window - 1), "--batch-size", "8")
    stitched = store["per_base"][:]
    model = load_portable(models["mergedna"])
    for i in range(half, len(seq) - half):
        centred = alone(model, seq[i - half:i + half + 1], source)  # base i is its middle, index `half`
        np.testing.assert_allclose(stitched[i], centred[half], atol=1e-5, rtol=0)


@pytest.mark.parametrize("layer", [None, "1"])
def test_carmania_stitched_states_equal_one_pass_over_the_whole_sequence(models, tmp_path, layer):
    """CARMANIA is causal with a receptive field of layer * (attention window - 1) bases; the default
    overlap gives every window that much left context, so a base's stitched state equals its state in
    any window covering its receptive field, the whole sequence included."""
    seq = random_dna(5000, seed=3)  # stride 128 - overlap: dozens of windows, several groups
    flags = ["--per-base", "--window", "128", "--batch-size", "4"] + (["--layer", layer] if layer else [])
    store = run_embed(tmp_path, models["carmania"], {"chrom": seq}, *flags)
    model = load_portable(models["carmania"])
    field = (int(layer) if layer else model.cfg.n_layers) * (model.cfg.window - 1)
    assert store.attrs["overlap"] == field and store.attrs["per_base"] == "hidden"
    with torch.no_grad():
        whole = model.hidden_states(encode_tensor(seq)[None], int(layer) if layer else None)[0].numpy()
    np.testing.assert_allclose(store["per_base"][:], whole, atol=1e-5, rtol=0)
    # Not vacuous: without overlap, the bases just after a window start lack context and differ.
    cut = run_embed(tmp_path, models["carmania"], {"chrom": seq}, *flags, "--overlap", "0")["per_base"]
    assert np.abs(cut[128:130] - whole[128:130]).max() > 1e-3


def test_per_base_shapes_and_attrs_for_both_families(models, tmp_path):
    records = {"a": random_dna(40, 4), "b": random_dna(150, 5), "c": random_dna(7, 6)}
    lengths = [len(s) for s in records.values()]
    for family, source in (("mergedna", "unmerge"), ("mergedna", "local-decoder"), ("carmania", "hidden")):
        store = run_embed(tmp_path, models[family], records, "--per-base", source, "--per-token",
                          "--window", "64", "--overlap", "16")
        dim = load_portable(models[family]).cfg.dim
        assert store["per_base"].shape == (sum(lengths), dim) and store["per_base"].dtype == np.float32
        assert list(store["base_offsets"][:]) == list(np.cumsum([0, *lengths]))
        assert store["assignment"].shape == (sum(lengths),)
        num_tokens = store["num_tokens"][:]
        assert store["tokens"].shape == (num_tokens.sum(), dim) and store["mean"].shape == (3, dim)
        for i in range(len(lengths)):
            assignment = rows(store, "assignment", i)
            assert assignment[0] == 0 and assignment[-1] == num_tokens[i] - 1
            assert np.all(np.diff(assignment) >= 0)
        if family == "carmania":  # every base is a token
            assert list(num_tokens) == lengths and np.array_equal(store["tokens"][:], store["per_base"][:])
        assert dict(store.attrs) | {"model": None, "input": None, "megamerge_version": None} == {
            "model": None, "input": None, "megamerge_version": None, "window": 64, "overlap": 16,
            "dtype": "fp32", "per_token": True, "per_base": source, "pool": ["mean-tokens"], "family": family,
            "layer": 2, "layer_description": f"{'Latent Encoder' if family == 'mergedna' else 'CARMANIA'} "
                                             "after 2 of 2 blocks, final norm applied",
            "description": store.attrs["description"]}


def test_per_base_unmerge_is_each_base_its_tokens_state(models, tmp_path):
    """Across cut tokens too (overlap): per_base[i] == tokens[assignment[i]] under the paper's merge."""
    store = run_embed(tmp_path, models["mergedna"], {"s": random_dna(200, 7)}, "--per-base", "--per-token",
                      "--window", "64", "--overlap", "32")
    assert store.attrs["per_base"] == "unmerge"
    np.testing.assert_array_equal(store["per_base"][:], store["tokens"][:][store["assignment"][:]])


def block_outputs(model, blocks, run) -> list[torch.Tensor]:
    """The output of each block during `run()`, caught by forward hooks (not through encode's layer)."""
    caught = []
    handles = [block.register_forward_hook(lambda _m, _i, out: caught.append(out)) for block in blocks]
    with torch.no_grad():
        run()
    for handle in handles:
        handle.remove()
    return caught


def test_layer_k_is_the_residual_stream_after_k_blocks_and_the_last_is_the_default(models):
    ids = encode_tensor(random_dna(90, 8))[None]
    mergedna, carmania = load_portable(models["mergedna"]), load_portable(models["carmania"])
    with torch.no_grad():
        latent = [mergedna.encode(ids, layer=k)[0] for k in range(3)]
        local = mergedna.local_encoder(ids, mergedna.token_targets(torch.tensor([90])))
        hidden = [carmania.hidden_states(ids, k) for k in range(3)]
        default_latent, default_hidden = mergedna.encode(ids)[0], carmania.hidden_states(ids)
    caught = block_outputs(mergedna, mergedna.latent_encoder.blocks, lambda: mergedna.encode(ids))
    assert torch.equal(latent[0], local.x) and torch.equal(latent[1], caught[0])
    assert torch.equal(latent[2], default_latent)
    assert torch.allclose(latent[2], mergedna.latent_encoder.norm(caught[1]))
    caught = block_outputs(carmania, carmania.layers, lambda: carmania(ids))
    assert torch.equal(hidden[0], carmania.tok_embeddings(ids)) and torch.equal(hidden[1], caught[0])
    assert torch.equal(hidden[2], default_hidden) and torch.allclose(hidden[2], carmania.norm(caught[1]))
    for states in (latent, hidden):
        assert all((states[j] - states[k]).abs().max() > 1e-3 for j in range(3) for k in range(j))


def test_layer_flag_reaches_the_store(models, tmp_path):
    seq = random_dna(60, 9)
    model = load_portable(models["mergedna"])
    stores = {layer: run_embed(tmp_path, models["mergedna"], {"s": seq}, "--per-token", *flags)
              for layer, flags in (("default", []), ("2", ["--layer", "2"]), ("1", ["--layer", "1"]),
                                   ("local", ["--layer", "local"]), ("0", ["--layer", "0"]))}
    for layer in ("1", "0"):
        with torch.no_grad():
            expected = model.encode(encode_tensor(seq)[None], layer=int(layer))[0][0].numpy()
        np.testing.assert_allclose(stores[layer]["tokens"][:], expected, atol=1e-5, rtol=0)
        assert stores[layer].attrs["layer"] == int(layer)
    assert np.array_equal(stores["default"]["tokens"][:], stores["2"]["tokens"][:])
    assert np.array_equal(stores["local"]["tokens"][:], stores["0"]["tokens"][:])
    assert stores["local"].attrs["layer_description"].startswith("Local Encoder output")
    assert np.abs(stores["1"]["mean"][:] - stores["2"]["mean"][:]).max() > 1e-2


def test_pooling_over_stitched_tokens(models, tmp_path):
    records = {"long": random_dna(260, 10), "short": random_dna(30, 11)}
    store = run_embed(tmp_path, models["mergedna"], records, "--per-token", "--per-base", "--window", "64",
                      "--overlap", "32", "--pool", "mean-tokens", "mean-bases", "max")
    for i in range(len(records)):
        tokens, per_base = rows(store, "tokens", i, "token_offsets"), rows(store, "per_base", i)
        np.testing.assert_allclose(store["mean"][i], tokens.mean(0), atol=1e-5, rtol=0)
        np.testing.assert_allclose(store["mean_bases"][i], per_base.mean(0), atol=1e-5, rtol=0)  # gather
        np.testing.assert_array_equal(store["max"][i], tokens.max(0))
        assert np.abs(store["mean"][i] - store["mean_bases"][i]).max() > 1e-4  # tokens cover unequal bases
    carmania = run_embed(tmp_path, models["carmania"], records, "--per-base", "--pool", "mean-bases", "max")
    assert "mean" not in carmania and carmania.attrs["pool"] == ["mean-bases", "max"]
    np.testing.assert_allclose(carmania["mean_bases"][1], rows(carmania, "per_base", 1).mean(0), atol=1e-5)


@pytest.mark.parametrize("family,flags,message", [
    ("mergedna", ["--layer", "3"], "--layer 3: this mergedna model has layers 0..2"),
    ("mergedna", ["--layer", "top"], "--layer top: this mergedna model has layers 0..2"),
    ("carmania", ["--layer", "local"], "--layer local: this carmania model has layers 0..2"),
    ("mergedna", ["--per-base", "hidden"], "--per-base hidden is not a mergedna source; choose unmerge"),
    ("carmania", ["--per-base", "unmerge"], "--per-base unmerge is not a carmania source; choose hidden"),
    ("mergedna", ["--per-base", "local-decoder", "--layer", "1"], "--layer 1 cannot go with it"),
    ("mergedna", ["--window", "64", "--overlap", "64"], "--overlap 64 must be smaller than --window 64"),
])
def test_bad_flags_are_named_and_write_nothing(models, tmp_path, capsys, family, flags, message):
    fasta = tmp_path / "in.fa"
    fasta.write_text(">s\nACGTACGTAC\n")
    out = tmp_path / "e.zarr"
    assert main(["--model", str(models[family]), "--input", str(fasta), "--out", str(out), "--no-progress",
                 *flags]) == 2
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert message in err
    assert list(tmp_path.iterdir()) == [fasta]


def test_an_existing_store_is_refused_before_any_work_and_left_alone(models, tmp_path, capsys):
    out = tmp_path / "e.zarr"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    assert main(["--model", str(models["mergedna"]), "--input", str(tmp_path / "missing.fa"),
                 "--out", str(out), "--per-base", "--no-progress"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["e.zarr"] and (out / "mine.txt").read_text() == "keep"


def test_growing_arrays_stream_in_whole_chunks(tmp_path):
    """Rows appended in uneven pieces land in base order in chunks of ~4 MiB (1024 rows of 1024 floats)."""
    import zarr

    rng = np.random.default_rng(12)
    data = rng.standard_normal((3500, 1024)).astype(np.float32)
    with new_store(tmp_path / "g.zarr", {"per_base": ("base", "dim")}) as store:
        growing = store.growing("per_base", (1024,), np.float32)
        for a, b in zip([0, 5, 900, 2100, 2101], [5, 900, 2100, 2101, 3500]):
            growing.append(data[a:b])
            assert growing.array.shape == (b // 1024 * 1024, 1024)  # whole chunks, until the store closes
        assert not (tmp_path / "g.zarr").exists()  # published only when complete
    array = zarr.open_group(str(tmp_path / "g.zarr"), mode="r")["per_base"]
    assert array.chunks == (1024, 1024) and array.metadata.dimension_names == ("base", "dim")
    np.testing.assert_array_equal(array[:], data)


def test_local_decoder_states_need_the_decoders(models, tmp_path, capsys):
    from megamerge.portable import read_portable_config, write_portable_state

    config = read_portable_config(models["mergedna"])
    encoder_only = write_portable_state(load_portable(models["mergedna"]).state_dict(), "mergedna",
                                        config["model_config"], tmp_path / "encoder_only", encoder_only=True)
    fasta = tmp_path / "in.fa"
    fasta.write_text(">s\nACGTACGTAC\n")
    flags = ["--model", str(encoder_only), "--input", str(fasta), "--no-progress", "--per-base"]
    assert main([*flags, "local-decoder", "--out", str(tmp_path / "d.zarr")]) == 2
    assert "has no decoders; use --per-base unmerge" in capsys.readouterr().err
    assert main([*flags, "unmerge", "--out", str(tmp_path / "u.zarr")]) == 0
    assert not (tmp_path / "d.zarr").exists() and (tmp_path / "u.zarr").exists()
