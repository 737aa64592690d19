"""Per-GPU memory of a MergeDNA pre-training layout: parameters, gradients, optimizer state and
activations, with and without activation checkpointing.

    python tools/estimate_memory.py --model 7b --tp 4 --pp 2 --zero 1 --micro-batch 1 --seq-length 4096

Model states follow the ZeRO paper's accounting for mixed precision with Adam: 2 bytes of bf16
weights and 2 of gradients per parameter, plus 12 bytes of optimizer state (fp32 master weight,
Adam m and v). ZeRO-1 divides the optimizer state by the data-parallel size, ZeRO-2 the gradients
as well. `--dtype fp32` (CPU) counts 4-byte weights and gradients and, with --zero 0, the plain
torch AdamW state (m, v: 8 bytes) without a master copy.

Parameters per GPU are counted exactly on a meta-device model: the latent blocks' projections are
divided by TP (megamerge.parallel.tensor_parallel), everything else is replicated; with PP the
pipeline layers are balanced by parameter count as DeepSpeed does and the heaviest stage is
reported.

Activations are the tensors autograd keeps for the backward pass, counted per token for each
block of each of the three passes (MTR and AMTM run the whole network, latent MTR the latent part
and the decoders; the Local Encoder shrinks the sequence from N bases to L = N/2 tokens
geometrically, latent MTR merges to L/2 halfway through the Latent Encoder). With activation
checkpointing a block keeps only its input, plus one block's full activations while it is being
recomputed. Under PP, stage 0 holds up to PP micro-batches in flight (1F1B), and the estimate
uses the heaviest stage's share of the blocks.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from megamerge.model import MergeDNA, MergeDNAConfig  # noqa: E402
from megamerge.model.config import PRESETS  # noqa: E402

GIB = 1024**3
SPLIT_SUFFIXES = ("wq.weight", "wk.weight", "wv.weight", "wo.weight", "w1.weight", "w2.weight", "w3.weight")


def pipeline_layer_params(cfg: MergeDNAConfig, tp: int) -> list[int]:
    """Parameters per GPU of each pipeline layer (megamerge/parallel/pipeline.py's order)."""
    with torch.device("meta"):
        model = MergeDNA(cfg)

    def count(module, split: bool) -> int:
        return sum(p.numel() // (tp if split and name.endswith(SPLIT_SUFFIXES) else 1)
                   for name, p in module.named_parameters())

    layers = [count(model.local_encoder, False)]
    layers += [count(b, True) for b in model.latent_encoder.blocks]
    layers += [count(model.latent_encoder.norm, False)]
    layers += [count(b, True) for b in model.latent_decoder.blocks]
    layers += [count(model.local_decoder, False)]
    return layers


def balanced_parts(weights: list[int], parts: int) -> list[int]:
    from deepspeed.runtime.utils import partition_balanced

    return partition_balanced(weights=weights, num_parts=parts)


def block_activation_bytes(cfg: MergeDNAConfig, tokens: float, tp: int, attn_span: float, nbytes: int,
                           materialized_attention: bool = False) -> float:
    """Saved-for-backward bytes of one pre-norm block (RMSNorm, RoPE attention, SwiGLU) over
    `tokens` tokens, each attending to `attn_span` keys."""
    D, F, H = cfg.dim, cfg.ffn_dim, cfg.n_heads
    per_token = (
        4 * D  # residual input, attention-norm output, residual after attention, ffn-norm output
        + 6 * D / tp  # q, k, v; roped q, k; attention output (wo's input)
        + 4 * F / tp  # gate, up, silu(gate), their product (w2's input)
    ) * nbytes
    if materialized_attention:  # the math path keeps scores and probabilities; fused kernels do not
        per_token += 2 * (H / tp) * attn_span * nbytes
    return tokens * per_token


def activation_bytes(cfg: MergeDNAConfig, micro: int, seq: int, tp: int, stage_blocks: dict, checkpoint: bool,
                     nbytes: int, materialized_attention: bool = False) -> float:
    """stage_blocks: how many blocks of each kind the heaviest stage holds."""
    N, L = seq, seq * cfg.compression_mean
    local_span = min(2 * cfg.window + 1, N)  # exact local attention over a window on each side
    n_loc = cfg.local_encoder_layers
    shrink = (L / N) ** (1.0 / n_loc)
    local_enc_tokens = [N * shrink**i for i in range(n_loc)]  # tokens entering each local block
    K = math.ceil(cfg.latent_compression * L)
    m = cfg.latent_merge_layer
    # (tokens, span) of every block instance per pass, by kind
    inst = {
        "local_encoder": [(t, local_span) for t in local_enc_tokens] * 2,  # passes 1 and 3
        "latent_encoder": [(L, L)] * 2 * cfg.latent_encoder_layers  # passes 1 and 3
        + [(L, L)] * m + [(K, K)] * (cfg.latent_encoder_layers - m),  # pass 2
        "latent_decoder": [(L, L)] * 3 * cfg.latent_decoder_layers,
        "local_decoder": [(N, local_span)] * 3 * cfg.local_decoder_layers,
    }
    layers_of_kind = {"local_encoder": n_loc, "latent_encoder": cfg.latent_encoder_layers,
                      "latent_decoder": cfg.latent_decoder_layers, "local_decoder": cfg.local_decoder_layers}
    total, biggest_block = 0.0, 0.0
    for kind, blocks in inst.items():
        tp_kind = tp if kind.startswith("latent") else 1
        share = stage_blocks.get(kind, 0) / layers_of_kind[kind]
        for tokens, span in blocks:
            full = block_activation_bytes(cfg, tokens * micro, tp_kind, span, nbytes, materialized_attention)
            biggest_block = max(biggest_block, full)
            total += share * (tokens * micro * cfg.dim * nbytes if checkpoint else full)
    # Embeddings, merge bookkeeping, unmerge gathers, the 4-way logits and the loss: a few [B, N, D]
    # tensors per pass, kept on the first and last stages.
    edges = (stage_blocks.get("local_encoder", 0) > 0) + (stage_blocks.get("local_decoder", 0) > 0)
    total += edges * 3 * 3 * micro * N * cfg.dim * nbytes / 2
    if checkpoint:
        total += biggest_block
    return total


def estimate(cfg: MergeDNAConfig, tp: int, pp: int, dp: int, zero: int, micro: int, seq: int,
             dtype: str = "bf16", materialized_attention: bool = False) -> dict:
    layers = pipeline_layer_params(cfg, tp)
    parts = balanced_parts(layers, pp) if pp > 1 else [0, len(layers)]
    n_enc, n_dec = cfg.latent_encoder_layers, cfg.latent_decoder_layers
    kinds = ["local_encoder"] + ["latent_encoder"] * n_enc + ["latent_norm"] + ["latent_decoder"] * n_dec \
        + ["local_decoder"]
    stages = []
    for s in range(pp):
        idx = range(parts[s], parts[s + 1])
        blocks = {}
        for i in idx:
            k = kinds[i]
            blocks[k] = blocks.get(k, 0) + (cfg.local_encoder_layers if k == "local_encoder" else
                                            cfg.local_decoder_layers if k == "local_decoder" else 1)
        stages.append((sum(layers[i] for i in idx), blocks, s))
    psi, blocks, stage = max(stages, key=lambda t: t[0])
    nbytes = 2 if dtype == "bf16" else 4
    params = psi * nbytes
    grads = psi * nbytes / (dp if zero >= 2 else 1)
    if dtype == "bf16":
        optim = psi * 12 / (dp if zero >= 1 else 1)
    else:  # fp32: DeepSpeed ZeRO keeps an fp32 partition besides the weights; plain torch AdamW does not
        optim = psi * (12 if zero >= 1 else 8) / (dp if zero >= 1 else 1)
    in_flight = pp - stage if pp > 1 else 1  # 1F1B: stage s holds pp - s micro-batches
    act = {ckpt: in_flight * activation_bytes(cfg, micro, seq, tp, blocks, ckpt, nbytes,
                                                    materialized_attention) for ckpt in (False, True)}
    return {"params_per_gpu": psi, "stage": stage, "parameters": params, "gradients": grads, "optimizer": optim,
            "activations": act[False], "activations_checkpointed": act[True]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="380m", choices=sorted(PRESETS))
    p.add_argument("--tp", type=int, default=1)
    p.add_argument("--pp", type=int, default=1)
    p.add_argument("--dp", type=int, default=None, help="data-parallel size (default: --gpus / (tp * pp))")
    p.add_argument("--gpus", type=int, default=8)
    p.add_argument("--zero", type=int, default=2, choices=[0, 1, 2])
    p.add_argument("--micro-batch", type=int, default=1)
    p.add_argument("--seq-length", type=int, default=4096)
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    p.add_argument("--materialized-attention", action="store_true",
                   help="count attention scores/probabilities (SDPA's math path) instead of a fused kernel")
    a = p.parse_args(argv)
    dp = a.dp or max(1, a.gpus // (a.tp * a.pp))
    cfg = MergeDNAConfig.from_preset(a.model)
    r = estimate(cfg, a.tp, a.pp, dp, a.zero, a.micro_batch, a.seq_length, a.dtype, a.materialized_attention)
    states = r["parameters"] + r["gradients"] + r["optimizer"]
    print(f"MergeDNA {a.model}: TP={a.tp} PP={a.pp} DP={dp} ZeRO-{a.zero}, micro-batch {a.micro_batch} x "
          f"{a.seq_length} bases, {a.dtype}; heaviest stage {r['stage']} holds {r['params_per_gpu'] / 1e6:.1f}M "
          "parameters per GPU")
    rows = [("parameters", r["parameters"]), ("gradients", r["gradients"]), ("optimizer state", r["optimizer"]),
            ("activations", r["activations"]), ("activations (checkpointed)", r["activations_checkpointed"])]
    for name, value in rows:
        print(f"  {name:28s} {value / GIB:8.2f} GiB")
    print(f"  {'total':28s} {(states + r['activations']) / GIB:8.2f} GiB")
    print(f"  {'total, activation ckpt':28s} {(states + r['activations_checkpointed']) / GIB:8.2f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
