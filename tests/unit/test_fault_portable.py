"""Faults in a portable model directory (issue 19, rows 6 and 12), for `from_pretrained` and for the
portable -> DeepSpeed converter: a config.json that asks for sizes the weights do not have fails
before anything of that size is allocated; a misspelt top-level key or broken JSON is an error
naming the file (and the key); the directory itself is never modified."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from megamerge.checkpoint_conversion import ConversionError
from megamerge.checkpoint_conversion.from_portable import read_checked_portable
from megamerge.models.registry import build_model_from_preset
from megamerge.portable import load_portable, save_portable
from tests.helpers import REPO, subprocess_env

# The child process loads the edited directory with both readers under an address-space limit: a
# reader that built the model (or read tensors) at the config's sizes would hit the limit and fail
# with an allocation error instead of the shape message, and the time and peak memory are reported.
LOAD_UNDER_LIMIT = """
import json, resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))
from megamerge.checkpoint_conversion import ConversionError
from megamerge.checkpoint_conversion.from_portable import read_checked_portable
from megamerge.portable import load_portable
result = {}
for name, load in (("from_pretrained", load_portable), ("converter", read_checked_portable)):
    started = time.perf_counter()
    try:
        load(sys.argv[1])
        result[name] = {"error": None}
    except (ValueError, ConversionError, RuntimeError, MemoryError) as e:
        result[name] = {"error": f"{type(e).__name__}: {e}"}
    result[name]["seconds"] = time.perf_counter() - started
result["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(result))
"""


@pytest.fixture(scope="module")
def portable(tmp_path_factory) -> Path:
    return save_portable(build_model_from_preset("tiny"), tmp_path_factory.mktemp("portable") / "tiny",
                         extra={"step": 7, "note": "kept"})  # fmt: skip


def edited_copy(portable: Path, out: Path, edit) -> Path:
    out.mkdir()
    (out / "model.safetensors").write_bytes((portable / "model.safetensors").read_bytes())
    config = json.loads((portable / "config.json").read_text())
    text = edit(config)
    (out / "config.json").write_text(text if isinstance(text, str) else json.dumps(config, indent=1))
    return out


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir()}


@pytest.mark.parametrize(
    "sizes",
    [{"dim": 10**7}, {"dim": 4096, "n_heads": 32, "ffn_dim": 11008, "latent_encoder_layers": 64}],
    ids=["dim-1e7", "dim-4096-64-layers"],
)
def test_config_larger_than_the_weights_fails_before_allocating(portable, tmp_path, sizes):
    bad = edited_copy(portable, tmp_path / "bad", lambda c: c["model_config"].update(sizes))
    before = snapshot(bad)
    done = subprocess.run([sys.executable, "-c", LOAD_UNDER_LIMIT, str(bad)], capture_output=True, text=True,
                          env=subprocess_env(), cwd=REPO, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for reader in ("from_pretrained", "converter"):
        error, seconds = result[reader]["error"], result[reader]["seconds"]
        assert error is not None and "does not match the mergedna config" in error, error
        assert str(bad / "model.safetensors") in error and str(bad / "config.json") in error
        assert seconds < 30, f"{reader} took {seconds:.1f} s to refuse"
    assert result["max_rss_mb"] < 2048, result  # the weights are 8 MB; the config asks for tens of GB or more
    assert snapshot(bad) == before


def test_shape_mismatch_names_the_tensor_and_both_shapes(portable, tmp_path):
    narrower = {"dim": 64, "n_heads": 2, "ffn_dim": 160}
    bad = edited_copy(portable, tmp_path / "bad", lambda c: c["model_config"].update(narrower))
    with pytest.raises(ValueError,
                       match=r"local_encoder\.embed\.weight is \[7, 128\], the config gives \[7, 64"):
        load_portable(bad)
    with pytest.raises(ConversionError, match=r"is \[7, 128\], the config gives \[7, 64\]"):
        read_checked_portable(bad)


@pytest.mark.parametrize("key", ["encoder_onyl", "modle_config", "Family", "iteration_"])
def test_unknown_top_level_key_names_the_file_and_the_key(portable, tmp_path, key):
    bad = edited_copy(portable, tmp_path / "bad", lambda c: c.update({key: True}))
    before = snapshot(bad)
    expected = rf"{bad / 'config.json'}: unknown top-level key '{key}'"
    with pytest.raises(ValueError, match=expected):
        load_portable(bad)
    with pytest.raises(ConversionError, match=expected):
        read_checked_portable(bad)
    assert snapshot(bad) == before


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (lambda c: json.dumps(c)[:-7], "not valid JSON"),
        (lambda c: json.dumps(c).replace('"family"', "'family'"), "not valid JSON"),
        (lambda c: "", "not valid JSON"),
        (lambda c: json.dumps([c]), "expected a JSON object at the top level, found list"),
        (lambda c: json.dumps({**c, "extra_keys": "step"}), "'extra_keys' must be a list of key names"),
        (lambda c: json.dumps({**c, "model_config": [1, 2]}), "'model_config' must be a JSON object"),
        (lambda c: json.dumps({**c, "format": "safetensors"}),
         "format 'safetensors' is not 'megamerge-portable'"),
    ],
)
def test_broken_config_json_names_the_file(portable, tmp_path, text, reason):
    bad = edited_copy(portable, tmp_path / "bad", text)
    with pytest.raises(ValueError, match=f"{bad / 'config.json'}.*{reason}"):
        load_portable(bad)
    with pytest.raises(ConversionError, match=reason):
        read_checked_portable(bad)


def test_declared_extras_and_legacy_directories_still_load(portable, tmp_path):
    config = json.loads((portable / "config.json").read_text())
    assert config["extra_keys"] == ["note", "step"] and config["step"] == 7
    load_portable(portable)  # save_portable's extras are declared, so they load
    legacy_keys = {"iteration": 3, "consumed_samples": 12, "training_args": {}, "source": {},
                   "weights_from": "x", "encoder_only": False, "weights_dtype": "float32"}

    def legacy(c):  # written before extra_keys existed, by megamerge's own converter
        for key in ("extra_keys", "step", "note"):
            c.pop(key)
        c.update(legacy_keys)

    old = edited_copy(portable, tmp_path / "old", legacy)
    load_portable(old)
    read_checked_portable(old)
    stray = edited_copy(portable, tmp_path / "stray", lambda c: (legacy(c), c.update(step=1)))
    with pytest.raises(ValueError, match="unknown top-level key 'step'"):
        load_portable(stray)


def test_converter_cli_reports_a_broken_portable_in_one_line(portable, tmp_path):
    bad = edited_copy(portable, tmp_path / "bad", lambda c: json.dumps(c)[:-3])
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(REPO / "tools" / "convert_checkpoint.py"), "--from-portable",
                           str(bad), "--out", str(tmp_path / "out")], capture_output=True, text=True,
                          env=subprocess_env(), cwd=REPO, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert "Traceback" not in done.stderr and f"{bad / 'config.json'}: not valid JSON" in last, done.stderr
    assert not (tmp_path / "out").exists(), f"took {time.perf_counter() - started:.0f} s"
