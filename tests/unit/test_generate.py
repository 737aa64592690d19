"""The portable format (both families) and sampling: tools/generate.py end to end, seeds, top-k,
temperature, and the errors a user will hit."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import megamerge
from megamerge.models import Carmania, CarmaniaConfig, MergeDNA, MergeDNAConfig
from megamerge.models.carmania.generation import generate, sample_next_base
from megamerge.portable import load_portable, save_portable
from megamerge.vocabulary import decode, encode_tensor
from tests.helpers import REPO, subprocess_env

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = {"dim": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "ffn_dim": 160, "window": 8}





@pytest.fixture(scope="module")
def carmania_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = Carmania(CarmaniaConfig(**SMALL))
    with torch.no_grad():  # a non-trivial head so greedy decoding is not one repeated base
        model.output.weight.normal_(std=1.0)
    return save_portable(model, tmp_path_factory.mktemp("portable") / "carmania", {"step": 123})


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "tools" / "generate.py"), *args], check=False,
                          capture_output=True, text=True, timeout=300, cwd=REPO,
                          env=subprocess_env())


def _fasta(text: str) -> list[tuple[str, str]]:
    records = []
    for block in text.split(">")[1:]:
        header, *lines = block.strip().split("\n")
        assert all(len(line) <= 80 for line in lines)
        records.append((header, "".join(lines)))
    return records


# -------------------------------------------------------------------------- portable format
@pytest.mark.parametrize("family", ["carmania", "mergedna"])
def test_portable_round_trip_is_exact(tmp_path, family):
    torch.manual_seed(0)
    if family == "carmania":
        model = Carmania(CarmaniaConfig(**SMALL))
    else:
        model = MergeDNA(MergeDNAConfig.from_preset("tiny", dim=64, n_heads=4, ffn_dim=160))
    save_portable(model, tmp_path, {"step": 7})
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["family"] == family and config["step"] == 7
    assert config["model_config"] == model.cfg.to_dict()
    stored = load_file(str(tmp_path / "model.safetensors"))
    assert set(stored) == set(model.state_dict()) and all(t.dtype == torch.float32 for t in stored.values())

    loaded = megamerge.from_pretrained(tmp_path)
    assert type(loaded) is type(model) and not loaded.training
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    ids = torch.randint(0, 4, (2, 64), generator=torch.Generator().manual_seed(0))
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(ids), loaded(ids))
    half = load_portable(tmp_path, dtype=torch.bfloat16)
    assert next(half.parameters()).dtype == torch.bfloat16


def test_portable_errors_are_actionable(tmp_path, carmania_dir):
    with pytest.raises(FileNotFoundError, match="not a megamerge portable model"):
        load_portable(tmp_path)
    with pytest.raises(ValueError, match="reserved"):
        save_portable(Carmania(CarmaniaConfig(**SMALL)), tmp_path / "x", {"family": "other"})
    bad = tmp_path / "bad"
    bad.mkdir()
    config = json.loads((carmania_dir / "config.json").read_text())
    config["model_config"]["n_layers"] = 3  # weights hold 2 blocks
    (bad / "config.json").write_text(json.dumps(config))
    (bad / "model.safetensors").write_bytes((carmania_dir / "model.safetensors").read_bytes())
    with pytest.raises(ValueError, match="missing .*layers.2"):
        load_portable(bad)


# --------------------------------------------------------------------------------- sampling
def test_top_k_and_temperature():
    logits = torch.tensor([[2.0, 1.5, -1.0, -3.0]]).expand(20000, -1)
    g = torch.Generator().manual_seed(0)
    drawn = sample_next_base(logits, 1.0, None, g)
    freq = torch.bincount(drawn, minlength=4).float() / len(drawn)
    assert (freq - torch.softmax(logits[0], -1)).abs().max() < 0.015
    assert set(sample_next_base(logits, 1.0, 2, g).tolist()) == {0, 1}
    assert set(sample_next_base(logits, 0.0, None, g).tolist()) == {0}
    cold = torch.bincount(sample_next_base(logits, 0.3, None, g), minlength=4)[0]
    assert cold > 0.8 * len(logits)  # lower temperature sharpens towards the mode
    with pytest.raises(ValueError):
        sample_next_base(logits, 1.0, 5, g)


def test_sampling_is_seeded_and_past_the_window():
    torch.manual_seed(0)
    model = Carmania(CarmaniaConfig(**SMALL)).eval()
    prompt = encode_tensor("ACGTNACG")[None].expand(3, -1)
    a = generate(model, prompt, 40, generator=torch.Generator().manual_seed(5))
    b = generate(model, prompt, 40, generator=torch.Generator().manual_seed(5))
    c = generate(model, prompt, 40, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (3, 48) and bool((a[:, 8:] < 4).all())  # only A, C, G, T are generated
    assert not torch.equal(a[0], a[1])  # the batch rows are independent samples


# ------------------------------------------------------------------------------ CLI end to end
def test_cli_greedy_output_matches_the_full_forward(carmania_dir, tmp_path):
    out = tmp_path / "greedy.fa"
    run = _run("--model", str(carmania_dir), "--prompt", "acgtNACGTT", "--max-new", "50",
               "--temperature", "0", "--num-samples", "2", "--out", str(out))
    assert run.returncode == 0, run.stderr
    assert run.stdout == "" and "generated 2 x 50 bases" in run.stderr
    records = _fasta(out.read_text())
    assert len(records) == 2 and records[0][1] == records[1][1]  # greedy: identical rows
    header, seq = records[0]
    assert header.startswith("sample_0 prompt_len=10 new=50")
    assert len(seq) == 60 and seq.startswith("ACGTNACGTT")

    # Greedy decoding with the window-bounded cache must pick argmax of the full forward each step.
    model = load_portable(carmania_dir)
    ids = encode_tensor(seq)[None]
    with torch.no_grad():
        expected = model(ids)[0, 9:-1].argmax(-1)
    assert decode(expected) == seq[10:]
    assert len(set(seq[10:])) > 1


def test_cli_seeds_top_k_and_stdout(carmania_dir):
    args = ["--model", str(carmania_dir), "--prompt", "ACGTACGT", "--max-new", "120", "--top-k", "2",
            "--no-progress"]
    first, again, other = _run(*args, "--seed", "1"), _run(*args, "--seed", "1"), _run(*args, "--seed", "2")
    assert first.returncode == 0, first.stderr
    assert first.stdout == again.stdout and first.stdout != other.stdout
    (_, seq), = _fasta(first.stdout)
    assert len(seq) == 128 and set(seq) <= set("ACGT")
    # With top-k 2, every sampled base is one of the two most likely under the full forward.
    model = load_portable(carmania_dir)
    with torch.no_grad():
        top2 = model(encode_tensor(seq)[None])[0, 7:-1].topk(2, -1).indices
    assert bool((top2 == encode_tensor(seq[8:])[:, None]).any(-1).all())


def test_cli_help_and_errors(tmp_path):
    help_run = _run("--help")
    assert help_run.returncode == 0 and "--top-k" in help_run.stdout and "--temperature" in help_run.stdout
    save_portable(MergeDNA(MergeDNAConfig.from_preset("tiny", dim=64, n_heads=4, ffn_dim=160)),
                  tmp_path / "m")
    wrong_family = _run("--model", str(tmp_path / "m"), "--prompt", "ACGT")
    assert wrong_family.returncode == 2 and "only CARMANIA" in wrong_family.stderr
    bad_prompt = _run("--model", str(tmp_path / "m"), "--prompt", "ACGX")
    assert bad_prompt.returncode == 2 and "invalid base 'X'" in bad_prompt.stderr
    assert _run("--model", str(tmp_path), "--prompt", "ACGT", "--top-k", "7").returncode == 2
