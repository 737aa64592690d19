"""tools/export_hf.py: the exported directory loads with transformers alone (a subprocess where
importing megamerge fails, cwd outside the repository) and every class matches megamerge's forward
on the same weights to 1e-5 in fp32, on a right-padded batch; the way back gives identical tensors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from megamerge.finetune.adapters import DEFAULT_TARGETS
from megamerge.finetune.build import build_task_model
from megamerge.finetune.results import save_seed_run
from megamerge.hf_export.export import export_finetuned, export_to_hf, import_from_hf
from megamerge.models.carmania.generation import generate
from megamerge.models.mergedna.config import MergeDNAConfig
from megamerge.models.mergedna.model import MergeDNA
from megamerge.models.mergedna.token_merging import unmerge
from megamerge.portable import load_portable, read_portable_config, read_portable_weights, save_portable
from megamerge.vocabulary import PAD, encode_tensor
from tests.unit.finetune_tasks import micro_carmania, micro_mergedna

WORKER = Path(__file__).with_name("hf_export_worker.py")
TOLERANCE = 1e-5
# Lengths differ so the batch is right-padded; lower case and N are part of the alphabet.
SEQUENCES = ["ACGTACGGTTAACCGGTTTTTTTTACGATCGATCGGGCATNACGT" * 2, "acgtTTTTTTTTTTGGCCAA", "GATTACA" * 5]


def megamerge_ids(sequences: list[str]) -> torch.Tensor:
    rows = [encode_tensor(s) for s in sequences]
    return torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=PAD)  # [B, N]


def run_worker_jobs(tmp: Path, jobs: list[dict]) -> list[dict]:
    """Each job's outputs; the worker runs with cwd and HF caches in tmp and no repository on its path.
    A job: hf_dir, classes, and optionally adapter, generate + prompts."""
    requests = [{"out": str(tmp / f"outputs{i}.safetensors"), "sequences": SEQUENCES, "adapter": None,
                 **{k: str(v) if isinstance(v, Path) else v for k, v in job.items()}} for i, job in enumerate(jobs)]
    (tmp / "request.json").write_text(json.dumps(requests))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HOME=str(tmp / "hf_home"), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([sys.executable, str(WORKER), str(tmp / "request.json")], cwd=tmp, env=env, check=False,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [load_file(r["out"]) for r in requests]


def run_worker(tmp: Path, hf_dir: Path, classes: list[str], adapter: Path | None = None, **extra) -> dict:
    return run_worker_jobs(tmp, [{"hf_dir": hf_dir, "classes": classes, "adapter": adapter, **extra}])[0]


def close(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a - b).abs().max())


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export_hf")
    portable = micro_mergedna(root / "portable")
    return root, portable, export_to_hf(portable, root / "hf")


def test_worker_cannot_import_megamerge(tmp_path):
    """The isolation the other tests rely on: the worker's interpreter refuses megamerge."""
    code = f"exec(open({str(WORKER)!r}).read().split('import json')[0]); import megamerge"
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          check=False)
    assert proc.returncode != 0 and "megamerge" in proc.stderr


def test_mergedna_model_matches_encode(exported, tmp_path):
    """AutoModel on a right-padded batch, with the paper's merge and with megamerge's options (rotary
    merge: each base's unmerged state is rotated back by its own offset; global ranking)."""
    _, paper_portable, paper_hf = exported
    torch.manual_seed(1)
    options = MergeDNAConfig.from_dict(read_portable_config(paper_portable)["model_config"])
    options.rotary_merge, options.merge_selection = True, "global_rank"
    options_portable = save_portable(MergeDNA(options), tmp_path / "options_portable")
    options_hf = export_to_hf(options_portable, tmp_path / "options_hf")
    outputs = run_worker_jobs(tmp_path, [{"hf_dir": paper_hf, "classes": ["AutoModel"]},
                                         {"hf_dir": options_hf, "classes": ["AutoModel"]}])
    ids = megamerge_ids(SEQUENCES)
    for portable, hf_dir, out in zip((paper_portable, options_portable), (paper_hf, options_hf), outputs):
        model = load_portable(portable)
        assert torch.equal(out["input_ids"], ids)
        assert torch.equal(out["attention_mask"].bool(), ids != PAD)
        with torch.no_grad():
            tokens = model.local_encoder(ids, model.token_targets((ids != PAD).sum(1)))
            latent, _ = model.latent_encoder(tokens)
        assert torch.equal(out["AutoModel.token_mask"], latent.valid)
        assert torch.equal(out["AutoModel.base_to_token"], latent.assign)
        valid = latent.valid[..., None]
        assert close(out["AutoModel.last_hidden_state"] * valid, latent.x * valid) < TOLERANCE
        B, N = ids.shape
        base_pos = torch.arange(N, dtype=torch.float32).expand(B, N)
        per_base = unmerge(latent.x, latent.assign, base_pos, latent.pos, model.cfg.merge_theta)  # [B, N, D]
        base_valid = (ids != PAD)[..., None]
        assert close(out["AutoModel.base_hidden_state"] * base_valid, per_base * base_valid) < TOLERANCE
        assert "head.weight" not in load_file(str(hf_dir / "model.safetensors"))  # no task head here
    assert not torch.equal(outputs[0]["AutoModel.base_to_token"], outputs[1]["AutoModel.base_to_token"])


def finetuned_run(root: Path, portable: Path, **spec_changes) -> tuple[Path, torch.Tensor]:
    """A saved tools/finetune.py seed directory with non-trivial LoRA / head weights, and the
    TaskModel's outputs on SEQUENCES (what megamerge predicts)."""
    spec = {"model": str(portable), "family": "mergedna", "method": "lora", "task_type": "classification",
            "num_outputs": 3, "pooling": "mean_tokens", "from_scratch": False, "seed": 0, "eval_compression": None,
            "lora_rank": 4, "lora_alpha": 8.0, "target_modules": list(DEFAULT_TARGETS), "adapt_tokenizer": False,
            **spec_changes}
    model = build_task_model(spec)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name or name.startswith("head."):
                p.normal_(std=0.2)  # fresh LoRA B is zero: a no-op adapter would prove nothing
        expected = model.eval()(megamerge_ids(SEQUENCES))
    directory = save_seed_run(model, spec, root / "seed0", [np.zeros(1)])
    return directory, expected


def test_lora_sequence_classifier_matches_megamerge(exported, tmp_path):
    """A LoRA run with the tokenizer adapted, mean_bases pooling and its own eval compression: the
    exported backbone + head, plus the run's adapter loaded unchanged by peft, predict the same."""
    _, portable, _ = exported
    run_dir, expected = finetuned_run(tmp_path, portable, pooling="mean_bases", adapt_tokenizer=True,
                                      eval_compression=0.75)
    hf_dir = export_finetuned(run_dir, tmp_path / "hf")
    out = run_worker(tmp_path, hf_dir, ["AutoModelForSequenceClassification"], adapter=run_dir)
    assert close(out["AutoModelForSequenceClassification.logits"], expected) < TOLERANCE


def test_per_base_classifier_matches_megamerge(exported, tmp_path):
    """A full fine-tune of a per-base task: AutoModelForTokenClassification through both decoders."""
    _, portable, _ = exported
    run_dir, expected = finetuned_run(tmp_path, portable, method="full", task_type="per_base", num_outputs=2)
    hf_dir = export_finetuned(run_dir, tmp_path / "hf")
    out = run_worker(tmp_path, hf_dir, ["AutoModelForTokenClassification"])
    base_valid = (megamerge_ids(SEQUENCES) != PAD)[..., None]
    got = out["AutoModelForTokenClassification.logits"]
    assert close(got * base_valid, expected * base_valid) < TOLERANCE


def test_round_trip_to_portable_is_identical(exported, tmp_path):
    _, portable, hf_dir = exported
    back = import_from_hf(hf_dir, tmp_path / "portable")
    original, returned = read_portable_weights(portable), read_portable_weights(back)
    assert original.keys() == returned.keys()
    assert all(torch.equal(original[k], returned[k]) for k in original)
    assert read_portable_config(back) == read_portable_config(portable)
    assert torch.equal(load_portable(back).encode(megamerge_ids(SEQUENCES))[0],
                       load_portable(portable).encode(megamerge_ids(SEQUENCES))[0])


def test_carmania_causal_lm_matches_megamerge(tmp_path):
    """Logits on a right-padded batch, and greedy generate() through transformers' loop with
    megamerge's sliding-window cache (prompts longer than the window, 3 windows generated)."""
    portable = micro_carmania(tmp_path / "portable")
    hf_dir = export_to_hf(portable, tmp_path / "hf")
    prompts = ["ACGTTGCAAGGCTTACGATCGANTTACG", "ttgacgatcgatcgatgcgcgcatatat"]
    out = run_worker(tmp_path, hf_dir, ["AutoModelForCausalLM"], generate=48, prompts=prompts)
    model = load_portable(portable)
    ids = megamerge_ids(SEQUENCES)
    with torch.no_grad():
        expected = model(ids)  # [B, N, 4]
    got = out["AutoModelForCausalLM.logits"]
    assert got.shape[-1] == 7 and bool(torch.isinf(got[..., 4:]).all())  # N, PAD, MASK never predicted
    valid = (ids != PAD)[..., None]
    assert close(got[..., :4] * valid, expected * valid) < TOLERANCE
    reference = generate(model, megamerge_ids(prompts), 48, temperature=0)
    assert torch.equal(out["AutoModelForCausalLM.generated"], reference)
