"""Tensor parallelism against the unsplit model, in real 2-process gloo runs (torchrun).

Run by pytest, this file launches itself under `torchrun --nproc-per-node 2`; each rank builds the
same full model (TP=1 reference) and a TP=2 copy cut from it, and rank 0 writes what it measured
to a JSON file that the tests below check.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from megamerge.models import MergeDNA, MergeDNAConfig
from megamerge.models.common.keyed_random import sample_seeds
from megamerge.parallel.tensor_parallel import TensorParallelSizeError, check_tensor_parallel_sizes
from megamerge.training.mock_data import MockGenome

SEQ, BATCH, ITERS, LR = 128, 4, 3, 2e-4


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_worker(out: Path, nproc: int = 2, script: str = __file__, args: tuple[str, ...] = ()) -> dict:
    torchrun = Path(sys.executable).parent / "torchrun"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run([str(torchrun), "--nproc-per-node", str(nproc), "--master-port", str(free_port()),
                           str(script), str(out), *args],
                          env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    return run_worker(tmp_path_factory.mktemp("tp") / "tp.json")


def test_tp2_forward_losses_match_tp1(measured):
    for key, (ref, got) in measured["forward"].items():
        assert abs(ref - got) <= 1e-5, (key, ref, got)


def test_tp2_gathered_gradients_match_tp1(measured):
    assert measured["n_params"] == measured["n_ref_params"]
    assert measured["max_grad_diff"] <= 1e-5, measured["worst_grad"]
    assert measured["max_grad"] > 1e-3  # the comparison covers real gradients, not zeros


def test_tp2_three_training_iterations_match_tp1(measured):
    ref, got = measured["train_losses"]
    assert len(ref) == len(got) == ITERS
    assert ref[0] != ref[-1]  # the weights moved
    for a, b in zip(ref, got):
        assert abs(a - b) <= 1e-4, (ref, got)


def test_only_sharded_parameters_carry_model_parallel_flags(measured):
    flagged = set(measured["flagged"])
    assert flagged and all(name.startswith(("latent_encoder.blocks.", "latent_decoder.blocks.")) for name in flagged)
    assert all(name.endswith(("wq.weight", "wk.weight", "wv.weight", "wo.weight", "w1.weight", "w2.weight",
                              "w3.weight")) for name in flagged)
    # every latent-block projection is split: 7 per block
    assert len(flagged) == 7 * measured["latent_blocks"]


def test_replicated_gradients_are_identical_on_both_tp_ranks(measured):
    assert measured["replicated_grad_rank_diff"] == 0.0


@pytest.mark.parametrize("heads,ffn,tp,what", [(4, 352, 3, "attention heads"), (4, 350, 4, "FFN width")])
def test_indivisible_heads_or_ffn_are_refused(heads, ffn, tp, what):
    with pytest.raises(TensorParallelSizeError, match=what):
        check_tensor_parallel_sizes(heads, ffn, tp)


# ---------------------------------------------------------------------------------- the worker
def _losses(out: dict) -> dict:
    return {k: float(out[k]) for k in ("loss", "mtr", "latent_mtr", "amtm")}


def worker(out_path: Path) -> None:
    import torch.distributed as dist

    from megamerge.parallel import apply_tensor_parallel, initialize_model_parallel
    from megamerge.parallel.tensor_parallel import gather_full, is_tensor_parallel

    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    state = initialize_model_parallel(tp=2, pp=1)
    cfg = MergeDNAConfig.from_preset("tiny")
    torch.manual_seed(0)
    ref = MergeDNA(cfg)
    model = copy.deepcopy(ref)
    blocks = apply_tensor_parallel(model, state.tp_group)

    index = torch.arange(BATCH)
    ids, seeds = MockGenome(SEQ, seed=3).batch(index), sample_seeds(3, index)

    ref_out, out = ref.compute_losses(ids, seeds), model.compute_losses(ids, seeds)
    ref_out["loss"].backward()
    out["loss"].backward()
    forward = {k: (v, _losses(out)[k]) for k, v in _losses(ref_out).items()}

    ref_params = dict(ref.named_parameters())
    worst, max_diff, max_grad, replicated_diff = None, 0.0, 0.0, 0.0
    for name, p in model.named_parameters():
        full = gather_full(p.grad, p, state.tp_group)
        diff = float((full - ref_params[name].grad).abs().max())
        max_grad = max(max_grad, float(ref_params[name].grad.abs().max()))
        if diff > max_diff:
            worst, max_diff = name, diff
        if not is_tensor_parallel(p):  # must be bitwise equal across TP ranks
            other = p.grad.clone()
            dist.broadcast(other, src=state.tp_ranks[0], group=state.tp_group)
            replicated_diff = max(replicated_diff, float((other - p.grad).abs().max()))

    # A few optimizer steps. A small lr: Adam's first steps move each weight by about lr * sign(g),
    # so a gradient element that is ~0 (its sign set by rounding, which TP's split reductions
    # change) moves by a full lr either way; lr 2e-4 keeps that well below the tolerance.
    losses = []
    for net in (ref, model):
        opt = torch.optim.AdamW(net.parameters(), lr=LR, betas=(0.9, 0.95), weight_decay=0.0)
        trace = []
        for it in range(ITERS):
            opt.zero_grad(set_to_none=True)
            index = torch.arange(BATCH) + BATCH * (it + 1)
            o = net.compute_losses(MockGenome(SEQ, seed=3).batch(index), sample_seeds(3, index))
            o["loss"].backward()
            opt.step()
            trace.append(float(o["loss"]))
        losses.append(trace)

    if dist.get_rank() == 0:
        out_path.write_text(json.dumps({
            "forward": forward, "max_grad_diff": max_diff, "worst_grad": worst, "max_grad": max_grad,
            "n_params": len(dict(model.named_parameters())), "n_ref_params": len(ref_params),
            "train_losses": losses, "latent_blocks": blocks,
            "flagged": [n for n, p in model.named_parameters() if is_tensor_parallel(p)],
            "replicated_grad_rank_diff": replicated_diff,
        }))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
