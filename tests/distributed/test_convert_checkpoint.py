"""tools/convert_checkpoint.py against real DeepSpeed checkpoints (CPU, gloo).

* A tiny model is trained at TP=2 by megamerge/train.py and converted to portable;
  `from_pretrained` must give the eval losses of the same checkpoint loaded at TP=2 by a real
  engine (tests/distributed/workers/checkpoint_engines.py under torchrun). The same for CARMANIA.
* Every TP shard train.py wrote has the shape megamerge.parallel's split table gives.
* A TP=2 x PP=2 checkpoint (4 ranks, ZeRO-1) of one iteration at lr 0 converts to exactly the
  weights train.py initialised with its seed (rebuilt here, unsplit).
* Portable -> TP=1, PP=2 and TP=2 x PP=2 DeepSpeed checkpoints -> portable must be
  bit-identical (TP=1 for CARMANIA), and train.py must accept the written checkpoint with
  --finetune.
* A bf16 ZeRO-2 DP=2 engine (the same workers module, `bf16`) saves a checkpoint and its master
  weights as the optimizer holds them (`safe_get_full_fp32_param`); the conversion must equal them exactly.
* Each error case exits 2 with one line and leaves no output behind.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from megamerge.data.mock_data import MockGenome
from megamerge.models.common.keyed_random import sample_seeds
from tests.distributed.workers.checkpoint_engines import SEQ, eval_batch, eval_losses
from tests.helpers import REPO, TINY_ARGS, describe, read_metrics, run_train, run_workers, subprocess_env

CONVERT = REPO / "tools" / "convert_checkpoint.py"
PP_CONFIG = REPO / "ds_configs" / "cpu_pp.json"
TRAIN_ITERS = 3


def run_worker(mode: str, nproc: int, *paths: Path) -> None:
    run_workers("tests.distributed.workers.checkpoint_engines", nproc, mode, *paths)


def to_portable(load: Path, out: Path, **kwargs) -> Path:
    """In-process --load conversion (the CLI is exercised by the error tests and --from-portable)."""
    from megamerge.checkpoint_conversion.to_portable import convert_to_portable

    return convert_to_portable(load, out, progress=False, **kwargs)


def convert(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CONVERT), "--quiet", *map(str, args)], check=False,
                          env=subprocess_env(),
                          capture_output=True, text=True, timeout=600)


def train_at_tp2(work: Path, save: str, iterations: int, *args: str) -> Path:
    """train.py on 2 ranks at TP=2 (tiny, mock data; `args` add to or override TINY_ARGS) -> the
    checkpoint directory work/save, saved at `iterations`."""
    proc = run_train(2, [*TINY_ARGS, "--seq-length", str(SEQ), "--micro-batch-size", "2", "--train-iters",
                         str(iterations), "--save-interval", str(iterations), "--eval-interval", "100",
                         "--tensor-model-parallel-size", "2", *args, "--save", save], work)
    assert proc.returncode == 0, describe(proc)
    return work / save


def assert_round_trip(portable: Path, ckpt: Path, back: Path, tp: int, pp: int) -> dict:
    """portable -> convert_checkpoint.py --from-portable at TP x PP -> portable again must give
    identical tensors; returns the second portable's config.json."""
    proc = convert("--from-portable", portable, "--out", ckpt, "--tp", tp, "--pp", pp)
    assert proc.returncode == 0, proc.stderr
    tag = (ckpt / "latest").read_text().strip()
    assert tag == f"global_step{json.loads((portable / 'config.json').read_text())['iteration']}"
    assert (ckpt / tag / "megamerge_weights_only").is_file()
    to_portable(ckpt, back)
    config = json.loads((back / "config.json").read_text())
    assert config["source"]["layout"] == {"tp": tp, "pp": pp, "dp": 1, "sp": 1}
    a, b = _tensors(portable), _tensors(back)
    assert sorted(a) == sorted(b)
    for name in a:
        assert torch.equal(a[name], b[name]), name
    return config


# --------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("convert")


@pytest.fixture(scope="module")
def tp2_checkpoint(work) -> Path:
    return train_at_tp2(work, "tp2", TRAIN_ITERS, "--global-batch-size", "4")


@pytest.fixture(scope="module")
def tp2_portable(work, tp2_checkpoint) -> Path:
    return to_portable(tp2_checkpoint, work / "tp2_portable")


def _tensors(portable: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(portable / "model.safetensors"))


def _no_leftovers(parent: Path, name: str) -> bool:
    return (not (parent / name).exists()
            and not [p for p in parent.iterdir() if p.name.startswith(f".{name}.")])


# ----------------------------------------------------------------------------- 1. TP=2 -> portable
def assert_portable_gives_the_tp2_eval_losses(checkpoint: Path, portable: Path, model_class: type,
                                              reference_file: Path) -> dict[str, float]:
    """from_pretrained(portable) scores the fixed batch as the TP=2 checkpoint loaded at TP=2 does
    (within 1e-5), and untrained weights of train.py's seed do not. Returns the reference losses."""
    import megamerge

    run_worker("eval_tp2", 2, checkpoint, reference_file)
    reference = json.loads(reference_file.read_text())
    model = megamerge.from_pretrained(portable, device="cpu", dtype=torch.float32)
    assert isinstance(model, model_class) and not model.training
    got = eval_losses(model)
    for key in reference:
        assert abs(got[key] - reference[key]) <= 1e-5, (key, got[key], reference[key])
    torch.manual_seed(1234)  # train.py's seed: the untrained weights give other losses
    untrained = eval_losses(model_class(model.cfg))
    assert abs(untrained["loss"] - reference["loss"]) > 1e-3
    return reference


def test_tp2_portable_gives_the_eval_losses_of_the_tp2_checkpoint(work, tp2_checkpoint, tp2_portable):
    from megamerge.models import MergeDNA

    assert_portable_gives_the_tp2_eval_losses(tp2_checkpoint, tp2_portable, MergeDNA, work / "tp2_eval.json")


def test_portable_output_has_no_pickles_and_records_provenance(tp2_portable):
    assert sorted(p.name for p in tp2_portable.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((tp2_portable / "config.json").read_text())
    assert config["iteration"] == TRAIN_ITERS and config["consumed_samples"] == 4 * TRAIN_ITERS
    assert config["source"]["layout"] == {"tp": 2, "pp": 1, "dp": 1, "sp": 1}
    assert config["source"]["tag"] == f"global_step{TRAIN_ITERS}" and config["megamerge_version"]
    tensors = _tensors(tp2_portable)
    assert tensors["latent_encoder.blocks.0.attention.wq.weight"].shape == (128, 128)  # joined on dim 0
    assert tensors["latent_encoder.blocks.0.feed_forward.w2.weight"].shape == (128, 352)  # joined on dim 1


def test_tp2_shards_are_joined_column_on_dim0_row_on_dim1(tp2_checkpoint, tp2_portable):
    from megamerge.checkpoint_conversion.safe_load import load_deepspeed_file

    step = tp2_checkpoint / f"global_step{TRAIN_ITERS}"
    shards = [load_deepspeed_file(step / f"mp_rank_{r:02d}_model_states.pt")["module"] for r in (0, 1)]
    full = _tensors(tp2_portable)
    for name, dim in (("latent_decoder.blocks.1.attention.wk.weight", 0),
                      ("latent_encoder.blocks.3.attention.wo.weight", 1),
                      ("latent_encoder.blocks.2.feed_forward.w3.weight", 0)):
        assert torch.equal(full[name], torch.cat([s["model." + name] for s in shards], dim)), name
    name = "local_encoder.embed.weight"  # replicated
    assert torch.equal(full[name], shards[0]["model." + name])


def test_split_table_is_what_training_wrote(tp2_checkpoint, tp2_portable):
    """megamerge.parallel's split table, which the converter joins by, names exactly the
    parameters that train.py's TP=2 ranks hold halves of, with the dimension they are halved in;
    and it says what Megatron's layout says (column: wq wk wv w1 w3 on dim 0; row: wo w2 on 1)."""
    import megamerge
    from megamerge.checkpoint_conversion.safe_load import load_deepspeed_file
    from megamerge.parallel.tensor_parallel_plan import split_parameter_dims

    step = tp2_checkpoint / f"global_step{TRAIN_ITERS}"
    shards = [load_deepspeed_file(step / f"mp_rank_{r:02d}_model_states.pt")["module"] for r in (0, 1)]
    full = _tensors(tp2_portable)
    halved = {}
    for name, tensor in full.items():
        shard = shards[0]["model." + name]
        if shard.shape != tensor.shape:
            (dim,) = [d for d in range(tensor.dim()) if shard.shape[d] != tensor.shape[d]]
            assert shard.shape[dim] * 2 == tensor.shape[dim], name
            halved[name] = dim
    megatron = {"wq": 0, "wk": 0, "wv": 0, "w1": 0, "w3": 0, "wo": 1, "w2": 1}
    assert halved == {n: megatron[n.split(".")[-2]] for n in halved}
    model = megamerge.from_pretrained(tp2_portable)
    blocks = model.cfg.latent_encoder_layers + model.cfg.latent_decoder_layers
    assert (len(halved) == 7 * blocks
            and all(n.startswith(("latent_encoder.", "latent_decoder.")) for n in halved))
    assert split_parameter_dims(model) == halved


def test_encoder_only_bf16_output(work, tp2_checkpoint, tp2_portable):
    import megamerge

    out = work / "encoder_only"
    to_portable(tp2_checkpoint, out, dtype=torch.bfloat16, encoder_only=True)
    tensors = _tensors(out)
    assert tensors and all(k.startswith(("local_encoder.", "latent_encoder.")) for k in tensors)
    assert all(t.dtype == torch.bfloat16 for t in tensors.values())
    model = megamerge.from_pretrained(out)
    full = megamerge.from_pretrained(tp2_portable)
    ids, _ = eval_batch()
    with torch.no_grad():
        got, ref = model.encode(ids)[0], full.encode(ids)[0]
    assert (got - ref).abs().max() < 0.05  # bf16 storage rounding only
    with pytest.raises(RuntimeError, match="encoder-only"):
        model(ids)


# ------------------------------------------------------------------ 2. portable -> TP1/PP2 -> portable
@pytest.mark.parametrize("tp,pp", [(1, 1), (1, 2), (2, 2)])
def test_portable_to_deepspeed_and_back_is_identical(work, tp2_portable, tp, pp):
    ckpt = work / f"ds_tp{tp}_pp{pp}"
    assert_round_trip(tp2_portable, ckpt, work / f"back_tp{tp}_pp{pp}", tp, pp)
    assert (ckpt / f"global_step{TRAIN_ITERS}" / f"mp_rank_{tp * pp - 1:02d}_model_states.pt").is_file()
    assert (ckpt / f"global_step{TRAIN_ITERS}" / "layer_00-model_00-model_states.pt").is_file() == (pp > 1)


def test_train_py_finetunes_from_a_converted_checkpoint(work, tp2_portable):
    """train.py --load CONVERTED (weights only: --finetune semantics) starts from exactly the
    converted weights: its first
    iteration's losses equal the forward of `from_pretrained` on the same samples (train.py keys
    samples and noise by global index: batches.global_indices, MockGenome, sample_seeds)."""
    import megamerge
    from megamerge.training.batches import global_indices

    ckpt = work / "ds_tp1_pp1"
    if not ckpt.is_dir():
        assert convert("--from-portable", tp2_portable, "--out", ckpt).returncode == 0
    seed, micro, accumulation = 77, 2, 2
    proc = run_train(1, [*TINY_ARGS, "--seq-length", str(SEQ), "--micro-batch-size", str(micro),
                         "--global-batch-size", str(micro * accumulation), "--train-iters", "1",
                         "--seed", str(seed), "--eval-interval", "100", "--load", str(ckpt), "--save", "ft"],
                     work)
    assert proc.returncode == 0, describe(proc)
    # no --finetune needed: the weights-only marker selects those semantics by itself
    assert "holds weights only" in proc.stderr + proc.stdout
    logged = read_metrics(work / "ft")[1]
    model = megamerge.from_pretrained(tp2_portable).train()
    expected = {k: 0.0 for k in ("loss", "mtr", "latent_mtr", "amtm")}
    with torch.no_grad():
        for m in range(accumulation):
            index = global_indices(0, m, accumulation, 1, 0, micro)
            out = model.compute_losses(MockGenome(SEQ, seed).batch(index), sample_seeds(seed, index))
            for k in expected:
                expected[k] += float(out[k]) / accumulation
    for key, value in expected.items():
        assert abs(logged[key] - value) <= 1e-5, (key, logged[key], value)


# ------------------------------------------------------------------- 3. bf16 ZeRO-2 DP=2 master weights
def test_bf16_zero2_dp2_converts_to_the_optimizer_master_weights(work):
    from safetensors.torch import load_file

    save, dump = work / "bf16", work / "bf16_dump"
    dump.mkdir()
    run_worker("bf16", 2, save, dump)
    assert (save / "global_step2" / "zero_pp_rank_1_mp_rank_00_optim_states.pt").is_file() or \
        (save / "global_step2" / "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt").is_file()
    to_portable(save, work / "bf16_portable")
    got = _tensors(work / "bf16_portable")
    master = load_file(str(dump / "master.safetensors"))
    bf16 = load_file(str(dump / "bf16_module.safetensors"))
    assert sorted(got) == sorted(master)
    for name in master:
        assert got[name].dtype == torch.float32
        assert torch.equal(got[name], master[name]), name
    # The master copy is not the bf16 copy: most trained weights are not representable in bf16.
    differs = sum(not torch.equal(got[n], bf16[n]) for n in got)
    assert differs > len(got) // 2
    config = json.loads((work / "bf16_portable" / "config.json").read_text())
    assert config["source"]["zero_stage"] == 2 and config["source"]["training_dtype"] == "bf16"
    assert config["source"]["layout"]["dp"] == 2


# ------------------------------------------------------------------ TP=2 x PP=2 (4 ranks) -> portable
TP_PP_SEED = 31


@pytest.fixture(scope="module")
def tp2pp2_checkpoint(work) -> Path:
    """One real iteration of train.py at TP=2 x PP=2 with ZeRO-1, at lr 0, so the master weights
    it saves are still the ones it initialised with its seed (the engine, optimizer and
    checkpoint paths all run; only the numbers stay put)."""
    proc = run_train(4, [*TINY_ARGS, "--ds_config", str(PP_CONFIG), "--seq-length", str(SEQ),
                         "--micro-batch-size", "1", "--global-batch-size", "1", "--train-iters", "1",
                         "--lr", "0", "--seed", str(TP_PP_SEED),
                         "--eval-interval", "100", "--eval-iters", "1", "--tensor-model-parallel-size", "2",
                         "--pipeline-model-parallel-size", "2", "--save", "tp2pp2"], work)
    assert proc.returncode == 0, describe(proc)
    return work / "tp2pp2"


def test_tp2_pp2_checkpoint_converts_to_the_unsplit_initial_model(work, tp2pp2_checkpoint):
    import math

    from megamerge.checkpoint_conversion.safe_load import load_deepspeed_file
    from megamerge.models import MergeDNA, MergeDNAConfig
    from megamerge.parallel.tensor_parallel_plan import split_parameter_dims

    portable = to_portable(tp2pp2_checkpoint, work / "tp2pp2_portable")
    got = _tensors(portable)
    config = json.loads((portable / "config.json").read_text())
    assert config["source"]["layout"] == {"tp": 2, "pp": 2, "dp": 1, "sp": 1}
    assert config["source"]["zero_stage"] == 1
    torch.manual_seed(TP_PP_SEED)  # train.py: seed, then the full model, then the split
    model = MergeDNA(MergeDNAConfig.from_dict(config["model_config"]))
    initial = model.state_dict()
    # Really 2 x 2: four model-parallel ranks that together hold each split parameter once (as
    # halves) and each replicated one twice (once per TP rank; pipeline stages are disjoint).
    step = tp2pp2_checkpoint / "global_step1"
    assert any(step.glob("layer_*-model_01-model_states.pt"))
    held = sum(math.prod(shape) for m in range(4)
               for group in load_deepspeed_file(step / f"mp_rank_{m:02d}_model_states.pt")["param_shapes"]
               for shape in group.values())
    split = sum(initial[name].numel() for name in split_parameter_dims(model))
    assert held == 2 * sum(t.numel() for t in initial.values()) - split and split > 0
    assert sorted(got) == sorted(initial)
    for name in initial:
        assert torch.equal(got[name], initial[name]), name
    # ... and the comparison can fail: another seed gives other weights.
    torch.manual_seed(TP_PP_SEED + 1)
    other = MergeDNA(MergeDNAConfig.from_dict(config["model_config"])).state_dict()
    assert not torch.equal(got["latent_encoder.blocks.0.attention.wq.weight"],
                           other["latent_encoder.blocks.0.attention.wq.weight"])


# ---------------------------------------------------------------------------------------- CARMANIA
CARMANIA_ITERS = 2


@pytest.fixture(scope="module")
def carmania_tp2_checkpoint(work) -> Path:
    return train_at_tp2(work, "carmania_tp2", CARMANIA_ITERS, "--model", "carmania-tiny",
                        "--global-batch-size", "2", "--eval-iters", "1")


@pytest.fixture(scope="module")
def carmania_portable(work, carmania_tp2_checkpoint) -> Path:
    return to_portable(carmania_tp2_checkpoint, work / "carmania_portable")


def test_carmania_tp2_portable_gives_the_eval_losses_of_the_tp2_checkpoint(work, carmania_tp2_checkpoint,
                                                                          carmania_portable):
    from megamerge.checkpoint_conversion.safe_load import load_deepspeed_file
    from megamerge.models import Carmania

    config = json.loads((carmania_portable / "config.json").read_text())
    assert config["family"] == "carmania"
    assert config["source"]["layout"] == {"tp": 2, "pp": 1, "dp": 1, "sp": 1}
    reference = assert_portable_gives_the_tp2_eval_losses(
        carmania_tp2_checkpoint, carmania_portable, Carmania, work / "carmania_tp2_eval.json")  # fmt: skip
    assert sorted(reference) == ["loss", "nt", "tm"]

    # Equal losses cannot see a TP-rank-order mistake made consistently (it only permutes heads
    # and FFN units), so the joined tensors are checked against the shards train.py wrote.
    step = carmania_tp2_checkpoint / f"global_step{CARMANIA_ITERS}"
    shards = [load_deepspeed_file(step / f"mp_rank_{r:02d}_model_states.pt")["module"] for r in (0, 1)]
    full = _tensors(carmania_portable)
    for name, dim, shape in (("layers.0.attention.wk.weight", 0, (64, 128)),  # 2 KV heads x 32
                             ("layers.1.attention.wo.weight", 1, (128, 128)),
                             ("layers.1.feed_forward.w1.weight", 0, (352, 128))):
        assert full[name].shape == shape
        assert torch.equal(full[name], torch.cat([s["model." + name] for s in shards], dim)), name
    assert torch.equal(full["tok_embeddings.weight"], shards[1]["model.tok_embeddings.weight"])  # replicated


def test_carmania_portable_to_tp1_and_back_is_identical(work, carmania_portable):
    config = assert_round_trip(carmania_portable, work / "carmania_ds_tp1", work / "carmania_back_tp1", 1, 1)
    assert config["family"] == "carmania"


def test_checkpoints_without_a_stored_family_name_it_by_their_preset(carmania_tp2_checkpoint, tmp_path):
    """Checkpoints from before the family was stored: train.py's --model argument names it."""
    copy = tmp_path / "ckpt"
    shutil.copytree(carmania_tp2_checkpoint, copy)
    path = copy / f"global_step{CARMANIA_ITERS}" / "mp_rank_00_model_states.pt"
    state = torch.load(path, weights_only=False)  # our own test file: trusted
    assert state.pop("family") == "carmania" and state["args"]["model"] == "carmania-tiny"
    torch.save(state, path)
    out = to_portable(copy, tmp_path / "portable")
    assert json.loads((out / "config.json").read_text())["family"] == "carmania"


def test_carmania_has_no_pipeline_or_encoder_only_conversion(carmania_tp2_checkpoint, carmania_portable,
                                                             tmp_path, _fails):
    _fails("--from-portable", carmania_portable, "--out", tmp_path / "out", "--pp", 2, expect="MergeDNA only")
    _fails("--load", carmania_tp2_checkpoint, "--out", tmp_path / "out", "--encoder-only",
           expect="holds a carmania")
    assert _no_leftovers(tmp_path, "out")


# --------------------------------------------------------------------------------- 4. errors
@pytest.fixture()
def damaged(work, tp2_checkpoint, tmp_path) -> Path:
    copy = tmp_path / "ckpt"
    shutil.copytree(tp2_checkpoint, copy)
    return copy


@pytest.fixture()
def _fails(capsys):
    """Run the CLI's main() in-process (one DeepSpeed import for all error tests); exit 2, one line."""
    from tools.convert_checkpoint import main

    def run(*args, expect: str) -> str:
        capsys.readouterr()
        assert main(["--quiet", *map(str, args)]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert (len(lines) == 1 and lines[0].startswith("convert_checkpoint.py: error:")
                and expect in lines[0]), lines
        return lines[0]

    return run


def test_error_missing_shard(damaged, tmp_path, _fails):
    (damaged / f"global_step{TRAIN_ITERS}" / "zero_pp_rank_0_mp_rank_01_optim_states.pt").unlink()
    err = _fails("--load", damaged, "--out", tmp_path / "out", expect="missing checkpoint shard")
    assert "zero_pp_rank_0_mp_rank_01_optim_states.pt" in err
    assert _no_leftovers(tmp_path, "out")


def test_error_truncated_file(damaged, tmp_path, _fails):
    path = damaged / f"global_step{TRAIN_ITERS}" / "zero_pp_rank_0_mp_rank_01_optim_states.pt"
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)
    err = _fails("--load", damaged, "--out", tmp_path / "out", expect="truncated or corrupt")
    assert path.name in err
    assert _no_leftovers(tmp_path, "out")


def test_error_config_does_not_match_tensors(damaged, tmp_path, _fails):
    path = damaged / f"global_step{TRAIN_ITERS}" / "mp_rank_00_model_states.pt"
    state = torch.load(path, weights_only=False)  # our own test file: trusted
    state["model_config"]["ffn_dim"] = 256
    torch.save(state, path)
    _fails("--load", damaged, "--out", tmp_path / "out", expect="does not match the tensors")
    assert _no_leftovers(tmp_path, "out")


def test_error_tag_does_not_exist(tp2_checkpoint, tmp_path, _fails):
    err = _fails("--load", tp2_checkpoint, "--tag", "global_step999", "--out", tmp_path / "out",
                 expect="no such checkpoint")
    assert f"global_step{TRAIN_ITERS}" in err  # lists what is there
    assert _no_leftovers(tmp_path, "out")


def test_error_portable_config_does_not_match_tensors(tp2_portable, tmp_path, _fails):
    import megamerge

    bad = tmp_path / "bad_portable"
    shutil.copytree(tp2_portable, bad)
    config = json.loads((bad / "config.json").read_text())
    config["model_config"]["dim"] = 64
    (bad / "config.json").write_text(json.dumps(config))
    _fails("--from-portable", bad, "--out", tmp_path / "out", expect="does not match")
    assert _no_leftovers(tmp_path, "out")
    with pytest.raises(ValueError, match="does not match"):
        megamerge.from_pretrained(bad)


def test_error_truncated_portable(tp2_portable, tmp_path, _fails):
    import megamerge

    bad = tmp_path / "bad_portable"
    shutil.copytree(tp2_portable, bad)
    weights = bad / "model.safetensors"
    with open(weights, "r+b") as f:
        f.truncate(weights.stat().st_size - 1000)
    _fails("--from-portable", bad, "--out", tmp_path / "out", expect="truncated or corrupt")
    assert _no_leftovers(tmp_path, "out")
    with pytest.raises(ValueError, match="truncated or corrupt"):
        megamerge.from_pretrained(bad)


def test_cli_error_is_one_line_without_traceback(tp2_checkpoint, tmp_path):
    proc = convert("--load", tp2_checkpoint, "--tag", "global_step999", "--out", tmp_path / "out")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert (lines[-1].startswith("convert_checkpoint.py: error: --tag global_step999")
            and "Traceback" not in proc.stderr)
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_refused(tp2_checkpoint, tp2_portable, _fails):
    _fails("--load", tp2_checkpoint, "--out", tp2_portable, expect="already exists")
    assert sorted(p.name for p in tp2_portable.iterdir()) == ["config.json", "model.safetensors"]
