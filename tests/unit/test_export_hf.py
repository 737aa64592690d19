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
                 **{k: str(v) if isinstance(v, Path) else v for k, v in job.items()}}
                for i, job in enumerate(jobs)]
    (tmp / "request.json").write_text(json.dumps(requests))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HOME=str(tmp / "hf_home"), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([sys.executable, str(WORKER), str(tmp / "request.json")], cwd=tmp, env=env,
                          check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [load_file(r["out"]) for r in requests]


def run_worker(tmp: Path, hf_dir: Path, classes: list[str], adapter: Path | None = None, **extra) -> dict:
    return run_worker_jobs(tmp, [{"hf_dir": hf_dir, "classes": classes, "adapter": adapter, **extra}])[0]


def close(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a - b).abs().max())


def finetuned_run(root: Path, portable: Path, **spec_changes) -> tuple[Path, torch.Tensor]:
    """A saved tools/finetune.py seed directory with non-trivial LoRA / head weights, and the
    TaskModel's outputs on SEQUENCES (what megamerge predicts)."""
    spec = {"model": str(portable), "family": "mergedna", "method": "lora", "task_type": "classification",
            "num_outputs": 3, "pooling": "mean_tokens", "from_scratch": False, "seed": 0,
            "eval_compression": None, "lora_rank": 4, "lora_alpha": 8.0,
            "target_modules": list(DEFAULT_TARGETS), "adapt_tokenizer": False, **spec_changes}
    model = build_task_model(spec)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name or name.startswith("head."):
                p.normal_(std=0.2)  # fresh LoRA B is zero: a no-op adapter would prove nothing
        expected = model.eval()(megamerge_ids(SEQUENCES))
    directory = save_seed_run(model, spec, root / "seed0", [np.zeros(1)])
    return directory, expected


REGRESSION_MEAN, REGRESSION_STD = 2.5, 0.3  # as tools/finetune.py records them from train's labels
CARMANIA_PROMPTS = ["ACGTTGCAAGGCTTACGATCGANTTACG", "ttgacgatcgatcgatgcgcgcatatat"]  # longer than its window
CARMANIA_NEW = 48  # 3 windows


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Every exported directory the tests check, and what the worker computed from each, in one
    worker run (an interpreter start with torch and transformers costs seconds)."""
    root = tmp_path_factory.mktemp("export_hf")
    dirs = {"paper": micro_mergedna(root / "paper")}
    torch.manual_seed(1)
    options = MergeDNAConfig.from_dict(read_portable_config(dirs["paper"])["model_config"])
    options.rotary_merge, options.merge_selection = True, "global_rank"
    dirs["options"] = save_portable(MergeDNA(options), root / "options")
    dirs["carmania"] = micro_carmania(root / "carmania")
    hf = {name: export_to_hf(path, root / f"{name}_hf") for name, path in dirs.items()}
    # LoRA with the tokenizer adapted, mean_bases pooling and the run's own eval compression.
    lora_run, lora_expected = finetuned_run(root / "lora", dirs["paper"], pooling="mean_bases",
                                            adapt_tokenizer=True, eval_compression=0.75)
    per_base_run, per_base_expected = finetuned_run(root / "per_base", dirs["paper"], method="full",
                                                    task_type="per_base", num_outputs=2)
    # A regression probe: its head learnt standardised targets; the export answers in label units.
    regression_run, regression_standardised = finetuned_run(
        root / "regression", dirs["paper"], method="probe", task_type="regression", num_outputs=1,
        label_mean=REGRESSION_MEAN, label_std=REGRESSION_STD)
    hf["lora"] = export_finetuned(lora_run, root / "lora_hf")
    hf["regression"] = export_finetuned(regression_run, root / "regression_hf")
    hf["per_base"] = export_finetuned(per_base_run, root / "per_base_hf")
    jobs = {
        "paper": {"hf_dir": hf["paper"], "classes": ["AutoModel"]},
        "options": {"hf_dir": hf["options"], "classes": ["AutoModel"]},
        "lora": {"hf_dir": hf["lora"], "classes": ["AutoModelForSequenceClassification"],
                 "adapter": hf["lora"] / "lora_adapter"},
        "per_base": {"hf_dir": hf["per_base"], "classes": ["AutoModelForTokenClassification"]},
        "regression": {"hf_dir": hf["regression"], "classes": ["AutoModelForSequenceClassification"]},
        "carmania": {"hf_dir": hf["carmania"], "classes": ["AutoModelForCausalLM"], "generate": CARMANIA_NEW,
                     "prompts": CARMANIA_PROMPTS},
    }
    outputs = dict(zip(jobs, run_worker_jobs(root, list(jobs.values()))))
    expected = {"lora": lora_expected, "per_base": per_base_expected,
                "regression": regression_standardised * REGRESSION_STD + REGRESSION_MEAN}
    return {"dirs": dirs, "hf": hf, "outputs": outputs, "expected": expected, "root": root}


def test_worker_cannot_import_megamerge(tmp_path):
    """The isolation the other tests rely on: the worker's interpreter refuses megamerge."""
    code = f"exec(open({str(WORKER)!r}).read().split('import json')[0]); import megamerge"
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          check=False)
    assert proc.returncode != 0 and "megamerge" in proc.stderr


@pytest.mark.parametrize("variant", ["paper", "options"])
def test_mergedna_model_matches_encode(exports, variant):
    """AutoModel on a right-padded batch, with the paper's merge and with megamerge's options (rotary
    merge: each base's unmerged state is rotated back by its own offset; global ranking)."""
    out, model = exports["outputs"][variant], load_portable(exports["dirs"][variant])
    ids = megamerge_ids(SEQUENCES)
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
    assert "head.weight" not in load_file(str(exports["hf"][variant] / "model.safetensors"))  # no task head


def test_lora_sequence_classifier_matches_megamerge(exports):
    """The exported backbone + head, plus the run's adapter loaded unchanged by peft, predict as
    megamerge's TaskModel does."""
    got = exports["outputs"]["lora"]["AutoModelForSequenceClassification.logits"]
    assert close(got, exports["expected"]["lora"]) < TOLERANCE


def test_regression_head_answers_in_label_units(exports):
    """tools/finetune.py standardises regression targets with train's mean and std and maps its
    predictions back; the exported model does the same, so it predicts what megamerge predicts."""
    # [B, 1], transformers'
    got = exports["outputs"]["regression"]["AutoModelForSequenceClassification.logits"]
    assert close(got[:, 0], exports["expected"]["regression"]) < TOLERANCE
    config = json.loads((exports["hf"]["regression"] / "config.json").read_text())
    assert (config["label_mean"], config["label_std"]) == (REGRESSION_MEAN, REGRESSION_STD)


def test_per_base_classifier_matches_megamerge(exports):
    """A full fine-tune of a per-base task: AutoModelForTokenClassification through both decoders."""
    base_valid = (megamerge_ids(SEQUENCES) != PAD)[..., None]
    got = exports["outputs"]["per_base"]["AutoModelForTokenClassification.logits"]
    assert close(got * base_valid, exports["expected"]["per_base"] * base_valid) < TOLERANCE


def test_carmania_causal_lm_matches_megamerge(exports):
    """Logits on a right-padded batch, and greedy generate() through transformers' loop with
    megamerge's sliding-window cache, equal to megamerge's own generation."""
    out, model = exports["outputs"]["carmania"], load_portable(exports["dirs"]["carmania"])
    ids = megamerge_ids(SEQUENCES)
    with torch.no_grad():
        expected = model(ids)  # [B, N, 4]
    got = out["AutoModelForCausalLM.logits"]
    assert got.shape[-1] == 7 and bool(torch.isinf(got[..., 4:]).all())  # N, PAD, MASK never predicted
    valid = (ids != PAD)[..., None]
    assert close(got[..., :4] * valid, expected * valid) < TOLERANCE
    reference = generate(model, megamerge_ids(CARMANIA_PROMPTS), CARMANIA_NEW, temperature=0)
    assert torch.equal(out["AutoModelForCausalLM.generated"], reference)


@pytest.mark.parametrize("name", ["paper", "carmania", "per_base"])
def test_round_trip_to_portable_is_identical(exports, tmp_path, name):
    """--from-hf gives back the portable tensors and config (a fine-tuned run: its backbone, not the head)."""
    back = import_from_hf(exports["hf"][name], tmp_path / "portable")
    source = exports["dirs"].get(name) or exports["root"] / "per_base" / "seed0" / "model"
    original, returned = read_portable_weights(source), read_portable_weights(back)
    assert original.keys() == returned.keys()
    assert all(torch.equal(original[k], returned[k]) for k in original)
    assert read_portable_config(back) == read_portable_config(source)
