"""MergeDNA's objective exists once (megamerge/models/mergedna/objective.py): the pipeline stages
and `MergeDNA.compute_losses` both call its pieces, and neither the pipeline nor any other MergeDNA
module draws a mask, merges latents or scores bases on its own. So does its forward: the latent
block step (merge if due -> RoPE -> key bias -> block) is defined once, in latent_encoder.py, and
the module and every pipeline stage run it. And the generic code knows no family: nothing under
megamerge/training/ or megamerge/parallel/ imports a family's modules. Read from the source (AST),
so a copy that would let PP drift from PP = 1 fails here before any multi-process run."""

from __future__ import annotations

import ast
from pathlib import Path

from megamerge.models.mergedna import objective

ROOT = Path(__file__).resolve().parents[2] / "megamerge"
PIPELINE = ROOT / "models" / "mergedna" / "pipeline.py"
LATENT_ENCODER = ROOT / "models" / "mergedna" / "latent_encoder.py"
LATENT_ENCODER_MODULE = "megamerge.models.mergedna.latent_encoder"
# Reached through latent_encoder.py's step functions, not called by the pipeline itself.
STEP_PIECES = {"merge_latent", "latent_key_bias"}
MODEL = ROOT / "models" / "mergedna" / "model.py"
OBJECTIVE_MODULE = "megamerge.models.mergedna.objective"
PIECES = {"token_targets", "merge_latent", "latent_key_bias", "unmerge_latent", "amtm_base_mask",
          "mask_bases", "objective_outputs"}
# The primitives the objective is made of: only objective.py may call them (their own modules aside).
PRIMITIVES = {"base_cross_entropy", "amtm_token_mask", "global_merge_to", "group_sizes",
              "transition_matrix_loss", "uniform", "normal", "cross_entropy"}


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _called_names(tree: ast.AST) -> set[str]:
    """Names called as f(...) or something.f(...)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            out.add(f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else "")
    return out


def _imported_from(tree: ast.AST, module: str) -> set[str]:
    return {a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module == module
            for a in node.names}


def test_every_piece_exists_in_the_objective_module():
    assert all(callable(getattr(objective, name)) for name in PIECES)


def test_pipeline_stages_import_the_objective_pieces_and_call_them():
    tree = _tree(PIPELINE)
    assert _imported_from(tree, OBJECTIVE_MODULE) == PIECES - STEP_PIECES
    assert PIECES - STEP_PIECES <= _called_names(tree)
    assert {"latent_block_step", "merge_if_due"} <= _imported_from(tree, LATENT_ENCODER_MODULE)
    assert {"latent_block_step", "merge_if_due", "block_on_pass"} <= _called_names(tree)


def _functions_calling(path: Path, names: set[str]) -> list[str]:
    """The functions of `path` whose own body calls any of `names`."""
    return sorted(node.name for node in ast.walk(_tree(path)) if isinstance(node, ast.FunctionDef)
                  and _called_names(node) & names)


def test_the_latent_block_step_is_defined_once():
    """merge_latent, latent_key_bias and the latent blocks' RoPE are called in one function each of
    latent_encoder.py, and nowhere else in MergeDNA but objective.py's definitions."""
    assert _functions_calling(LATENT_ENCODER, {"merge_latent"}) == ["merge_if_due"]
    assert _functions_calling(LATENT_ENCODER, {"latent_key_bias", "rope_angles"}) == ["block_on_pass"]
    for path in sorted((ROOT / "models" / "mergedna").glob("*.py")):
        if path in (LATENT_ENCODER, ROOT / "models" / "mergedna" / "objective.py"):
            continue
        assert not _called_names(_tree(path)) & STEP_PIECES, path.name
    assert "rope_angles" not in _called_names(_tree(PIPELINE))


def test_generic_code_imports_no_model_family():
    families = ("megamerge.models.mergedna", "megamerge.models.carmania")
    for folder in ("training", "parallel"):
        for path in sorted((ROOT / folder).glob("*.py")):
            imported = {node.module for node in ast.walk(_tree(path)) if isinstance(node, ast.ImportFrom)}
            imported |= {a.name for node in ast.walk(_tree(path)) if isinstance(node, ast.Import)
                         for a in node.names}
            assert not [m for m in imported if m and m.startswith(families)], f"{folder}/{path.name}"


def test_compute_losses_calls_the_same_pieces():
    tree = _tree(MODEL)
    compute_losses = next(n for n in ast.walk(tree)
                          if isinstance(n, ast.FunctionDef) and n.name == "compute_losses")
    via_module = {n.attr for n in ast.walk(compute_losses) if isinstance(n, ast.Attribute)
                  and isinstance(n.value, ast.Name) and n.value.id == "objective"}
    # token_targets is reached through MergeDNA.token_targets, merge_latent and latent_key_bias through
    # the Latent Encoder's step.
    assert via_module >= PIECES - {"token_targets"} - STEP_PIECES
    assert "objective.token_targets" in ast.unparse(tree)
    latent_encoder = LATENT_ENCODER.read_text()
    assert "objective.merge_latent" in latent_encoder and "objective.latent_key_bias" in latent_encoder


def test_pipeline_defines_no_objective_of_its_own():
    tree = _tree(PIPELINE)
    assert not (_called_names(tree) & PRIMITIVES)
    imported = {a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for a in node.names}
    assert not (imported & (PRIMITIVES | {"unmerge", "STREAM_AMTM", "STREAM_COMPRESSION", "MASK"}))
    # No borrowed model methods either (the old `token_targets = MergeDNA.token_targets`).
    borrowed = [ast.unparse(n) for n in ast.walk(tree) if isinstance(n, ast.Attribute)
                and isinstance(n.value, ast.Name) and n.value.id == "MergeDNA"]
    assert borrowed == []


def test_only_the_objective_module_calls_the_primitives_in_mergedna():
    for path in sorted((ROOT / "models" / "mergedna").glob("*.py")):
        # the objective and the definitions
        if path.name in ("objective.py", "token_merging.py", "masking.py"):
            continue
        assert not (_called_names(_tree(path)) & PRIMITIVES), path.name
