"""megamerge/training/grad_norms.py on plain PyTorch modules with gradients set by hand, and
MergeDNA's groups (its spec): exactly the TokenMergers' grouping weights, inside the Local Encoder.
The helper under ZeRO-2 and the other layouts: tests/distributed/test_grad_norm_metrics.py."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from megamerge.models.registry import build_model_from_preset, family_of_preset
from megamerge.training.grad_norms import group_grad_norms


def test_norms_of_known_gradients():
    a, b, unused = nn.Parameter(torch.zeros(2, 2)), nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(1))
    a.grad = torch.tensor([[3.0, 0.0], [0.0, 0.0]])
    b.grad = torch.tensor([0.0, 4.0, 0.0])
    norms = group_grad_norms({"a": [a], "a_and_b": [a, b, unused], "none": [unused]})
    assert norms.dtype == torch.float32 and norms.tolist() == [3.0, 5.0, 0.0]


def test_mergedna_groups_are_the_merge_scorers_and_the_local_encoder():
    model = build_model_from_preset("tiny")
    groups = family_of_preset("tiny").grad_norm_groups(model)
    names = {id(p): name for name, p in model.named_parameters()}
    merge = sorted(names[id(p)] for p in groups["merge_grad_norm"])
    layers = model.cfg.local_encoder_layers
    assert merge == [f"local_encoder.mergers.{i}.grouping.weight" for i in range(layers)]
    assert sorted(names[id(p)] for p in groups["local_encoder_grad_norm"]) == sorted(
        name for name in names.values() if name.startswith("local_encoder."))
    assert family_of_preset("carmania-tiny").grad_norm_groups is None


def test_merge_norm_of_a_mergedna_backward():
    """One backward of the tiny model: the grouping weights learn (through the straight-through
    gate), and the helper's norm is theirs."""
    torch.manual_seed(0)
    model = build_model_from_preset("tiny", dim=32, n_heads=2, ffn_dim=64, grouping_dim=8)
    ids = torch.randint(0, 4, (2, 64))
    model.compute_losses(ids, torch.tensor([1, 2]))["loss"].backward()
    groups = family_of_preset("tiny").grad_norm_groups(model)
    merge, local = group_grad_norms(groups).tolist()
    expected = torch.cat([p.grad.flatten() for p in groups["merge_grad_norm"]]).norm().item()
    assert merge == pytest.approx(expected, rel=1e-6) and 0 < merge < local
