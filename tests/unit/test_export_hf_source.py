"""The generated modeling files (megamerge/hf_export/inline_source.py) and the export CLI, without
a subprocess: what the files import, that they hold no second copy of anything, and the refusals."""

from __future__ import annotations

import ast
import json

import pytest

from megamerge.hf_export.export import FAMILIES, modeling_source
from megamerge.hf_export.inline_source import inline_modules
from tests.unit.finetune_tasks import micro_mergedna
from tools.export_hf import main

ALLOWED_IMPORTS = {"__future__", "torch", "transformers", "math", "dataclasses", "struct"}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_generated_file_imports_only_torch_and_transformers(family):
    tree = ast.parse(modeling_source(family))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots = {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # the exported configuration file beside it
                assert node.module == f"configuration_{family}"
                continue
            roots = {node.module.split(".")[0]}
        else:
            continue
        # flash-attn and apex sit in try blocks: used only when importable.
        assert roots <= ALLOWED_IMPORTS | {"flash_attn", "apex"}, ast.unparse(node)
    top = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    assert len({n.name for n in top}) == len(top)  # every definition once
    assert "MergeDNA" not in {n.name for n in top}  # the training model (its losses) is not reached


def test_missing_module_is_named_at_export_time():
    """A root that needs a definition from a module left off the list fails here, not at load time."""
    with pytest.raises(ValueError, match="'RMSNorm' comes from megamerge"):
        inline_modules(["megamerge.vocabulary", "megamerge.models.common.rope",
                        "megamerge.models.common.local_attention", "megamerge.models.common.full_attention",
                        "megamerge.models.common.attention", "megamerge.models.common.block"],
                       ["TransformerBlock"])


def test_same_name_in_two_modules_is_refused():
    with pytest.raises(ValueError, match="defined in both"):
        inline_modules(["megamerge.models.mergedna.config", "megamerge.models.carmania.config"],
                       ["MergeDNAConfig", "CarmaniaConfig"])


def test_cli_exports_and_refuses_bad_input(tmp_path, capsys):
    portable = micro_mergedna(tmp_path / "portable")
    assert main(["--model", str(portable), "--out", str(tmp_path / "hf"), "--pooling", "mean_bases"]) == 0
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["model_type"] == "megamerge-mergedna" and config["pooling"] == "mean_bases"
    assert set(config["auto_map"]) == {"AutoConfig", "AutoModel", "AutoModelForSequenceClassification",
                                       "AutoModelForTokenClassification"}
    for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json", "modeling_mergedna.py",
                 "configuration_mergedna.py"):
        assert (tmp_path / "hf" / name).is_file(), name
    assert main(["--from-hf", str(tmp_path / "portable"), "--out", str(tmp_path / "back")]) == 2
    assert "megamerge_portable" in capsys.readouterr().err
    assert main(["--model", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
    assert "nowhere" in capsys.readouterr().err
