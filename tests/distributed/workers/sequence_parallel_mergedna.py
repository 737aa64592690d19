"""Run on 2 ranks by tests/distributed/test_parallel_sp.py: each rank builds the same full MergeDNA
(the S=1 reference) and a copy split over the 2-rank sequence-parallel group, runs both on the
same batch, sums the split copy's gradients over the group (as ZeRO does under SP) and rank 0
writes what it measured to a JSON file. CARMANIA's local-window blocks are checked the same way
(one forward and backward)."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import torch

from megamerge.data.mock_data import MockGenome
from megamerge.models import MergeDNA, MergeDNAConfig
from megamerge.models.common.keyed_random import sample_seeds
from megamerge.vocabulary import PAD
from tests.distributed.workers.adamw_trace import adamw_losses

# Samples of different lengths (a PAD suffix) make ragged token counts across the two shards.
SEQ, BATCH, ITERS, LR = 192, 3, 3, 2e-4
SHORT = (192, 131, 40)  # valid bases per sample: the third ends inside rank 0's half


def _batch(index: torch.Tensor) -> torch.Tensor:
    ids = MockGenome(SEQ, seed=3).batch(index)
    for row, length in enumerate(SHORT):
        ids[row, length:] = PAD
    return ids


def _losses(out: dict) -> dict:
    return {k: float(out[k]) for k in ("loss", "mtr", "latent_mtr", "amtm")}


def _gradient_difference(model, ref) -> tuple[float, str | None, float]:
    """(largest |grad - reference grad|, the parameter it is in, largest reference grad)."""
    ref_params = dict(ref.named_parameters())
    worst, max_diff, max_grad = None, 0.0, 0.0
    for name, p in model.named_parameters():
        diff = float((p.grad - ref_params[name].grad).abs().max())
        max_grad = max(max_grad, float(ref_params[name].grad.abs().max()))
        if diff > max_diff:
            worst, max_diff = name, diff
    return max_diff, worst, max_grad


def _carmania(group, scale: float) -> dict:
    from megamerge.models.carmania.config import CarmaniaConfig
    from megamerge.models.carmania.model import Carmania
    from megamerge.parallel.sequence_parallel import apply_sequence_parallel

    torch.manual_seed(0)
    ref = Carmania(CarmaniaConfig.from_preset("carmania-tiny"))
    model = copy.deepcopy(ref)
    apply_sequence_parallel(model, group)
    index = torch.arange(BATCH)
    ids, seeds = _batch(index), sample_seeds(3, index)
    ref_out, out = ref.compute_losses(ids, seeds), model.compute_losses(ids, seeds)
    ref_out["loss"].backward()
    (out["loss"] * scale).backward()
    _summed_grads(model, group)
    max_diff, worst, max_grad = _gradient_difference(model, ref)
    return {"loss": (float(ref_out["loss"]), float(out["loss"])), "max_grad_diff": max_diff,
            "worst_grad": worst, "max_grad": max_grad}


def _summed_grads(model, group) -> None:
    import torch.distributed as dist

    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad, group=group)


def worker(out_path: Path, overrides: dict | None = None) -> None:
    """`overrides`: MergeDNA options (test_fidelity_layouts.py), and "compile_backend" to compile the
    split copy's blocks first, as train.py --compile does (test_parallel_sp.py)."""
    import torch.distributed as dist
    from torch._dynamo.utils import counters

    from megamerge.parallel import initialize_model_parallel
    from megamerge.parallel.sequence_parallel import apply_sequence_parallel, backward_scale
    from megamerge.training.compile import apply_compile

    overrides = dict(overrides or {})
    compile_backend = overrides.pop("compile_backend", None)
    one_step = bool(overrides) or compile_backend is not None
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    state = initialize_model_parallel(sp=2)
    cfg = MergeDNAConfig.from_preset("tiny", **overrides)
    torch.manual_seed(0)
    ref = MergeDNA(cfg)
    model = copy.deepcopy(ref)
    compiled = apply_compile(model, backend=compile_backend) if compile_backend else 0
    blocks = apply_sequence_parallel(model, state.sp_group)
    scale = backward_scale(state.sp)

    index = torch.arange(BATCH)
    ids, seeds = _batch(index), sample_seeds(3, index)
    # float64: a hard merge ranking must not flip on the last bit that a different split rounds
    results = {}
    # With options or compiled blocks only the float32 step: the options change what is merged and
    # attended, compilation how a block runs, which that step covers; the rest checks the layout itself.
    for dtype in (torch.float32,) if one_step else (torch.float32, torch.float64):
        r, m = copy.deepcopy(ref).to(dtype), model.to(dtype)
        m.zero_grad(set_to_none=True)
        ref_out, out = r.compute_losses(ids, seeds), m.compute_losses(ids, seeds)
        ref_out["loss"].backward()
        (out["loss"] * scale).backward()
        _summed_grads(m, state.sp_group)
        max_diff, worst, max_grad = _gradient_difference(m, r)
        results[str(dtype)] = {
            "forward": {k: (v, _losses(out)[k]) for k, v in _losses(ref_out).items()},
            "max_grad_diff": max_diff, "worst_grad": worst, "max_grad": max_grad,
            "token_lengths_equal": torch.equal(ref_out["token_lengths"], out["token_lengths"]),
        }

    losses = [] if one_step else [
        adamw_losses(ref, _batch, ITERS, BATCH, LR),
        adamw_losses(model, _batch, ITERS, BATCH, LR, loss_scale=scale,
                     after_backward=lambda net: _summed_grads(net, state.sp_group))]

    carmania = None if one_step else _carmania(state.sp_group, scale)
    if dist.get_rank() == 0:
        # the float32 step at the top level, in tensor_parallel_mergedna's format
        out_path.write_text(json.dumps({**results["torch.float32"], "float64": results.get("torch.float64"),
                                        "train_losses": losses, "blocks": blocks, "compiled": compiled,
                                        "compiled_graphs": counters["stats"]["unique_graphs"],
                                        "carmania": carmania,
                                        "n_blocks": sum(1 for _ in ref.modules()
                                                        if type(_).__name__ == "TransformerBlock")}))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    worker(Path(sys.argv[1]), overrides=json.loads(sys.argv[2]) if len(sys.argv) > 2 else None)
