"""train.py --compile (issue 27, item 5): each Transformer block compiled with inductor, everything
between the blocks eager. Three optimizer steps of the compiled model equal eager ones. In float64,
so that the comparison sees the compiled function and not float32 reassociation, which flips hard
merge decisions on an ulp (BENCHMARKS.md, issue 31's kernel-path drift) and then diverges."""

from __future__ import annotations

import copy

import pytest
import torch
from torch._dynamo.utils import counters

from megamerge.data.mock_data import MockGenome
from megamerge.models import MergeDNA, MergeDNAConfig
from megamerge.models.common.block import TransformerBlock
from megamerge.training.activation_checkpointing import apply_activation_checkpointing
from megamerge.training.compile import apply_compile
from megamerge.vocabulary import PAD

pytestmark = pytest.mark.slow  # inductor compiles C++ kernels for every kind of block: ~100 s on 2 cores


def _small_model() -> MergeDNA:
    torch.manual_seed(0)
    # One block of each kind: inductor's cost is per distinct graph (~10 s each on 2 cores), not per block.
    cfg = MergeDNAConfig.from_preset("tiny", dim=32, n_heads=2, ffn_dim=64, grouping_dim=8,
                                     local_encoder_layers=1, latent_encoder_layers=1, latent_decoder_layers=1,
                                     local_decoder_layers=1, compression_range=(0.5, 0.6))
    return MergeDNA(cfg).double().train()


def _steps(model: MergeDNA, steps: int = 3) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(loss, flat gradient) of each of `steps` AdamW steps on a padded batch."""
    ids = MockGenome(64, seed=5).batch(torch.arange(2))
    ids[1, 57:] = PAD
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    out = []
    for step in range(steps):
        loss = model.compute_losses(ids, torch.tensor([1, 2]) + step)["loss"]
        loss.backward()
        out.append((loss.detach(), torch.cat([p.grad.flatten() for p in model.parameters()])))
        optimizer.step()
        optimizer.zero_grad()
    return out


def test_compiled_blocks_train_as_eager():
    torch._dynamo.reset()
    counters.clear()
    eager = _small_model()
    compiled = copy.deepcopy(eager)
    assert apply_compile(compiled) == sum(isinstance(m, TransformerBlock) for m in eager.modules()) == 4
    apply_activation_checkpointing(compiled)  # after compiling, as train.py applies them
    assert [n for n, _ in compiled.named_parameters()] == [n for n, _ in eager.named_parameters()]
    for (loss, grad), (loss_c, grad_c) in zip(_steps(eager), _steps(compiled)):
        assert abs(loss - loss_c) <= 1e-5 * abs(loss)
        assert (grad - grad_c).abs().max() <= 1e-5 * grad.abs().max()
    # the blocks really ran compiled: a graph per kind of block at least (local window, latent, decoder)
    assert counters["stats"]["unique_graphs"] >= 3
