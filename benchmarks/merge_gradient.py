"""Does the merge score receive a useful gradient? (issue 28, item 3)

    python benchmarks/merge_gradient.py [--steps 300] [--seeds 0,1,2] [--out runs/merge_gradient.json]

Trains a small MergeDNA (the paper's three losses, every default) on megamerge/data/paired_bases.py,
a corpus whose right tokenization is unambiguous (the base pairs), and scores its tokenizer on
fresh sequences against the same network with random and fixed merges (merge_decisions.py):
    mtr               reconstruction cross-entropy per base with each tokenizer (eval mode, L = N/2)
    pair_agreement    share of places between bases where the tokenizer and the pairs agree on a
                      token boundary (1.0: it cuts exactly the pairs; chance, at L = N/2, about 0.5)
for two arms: `gate` (the paper's straight-through gate: the hard merge passes the loss's gradient
to the grouping scores) and `no_gate_gradient` (the control: the same hard merges, no gradient to
the scores; what the grouping embedding learns then it learns only through the token vectors it
reads). Medians over --seeds go to stdout and --out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from tqdm import tqdm

from megamerge.data.paired_bases import boundary_agreement, paired_bases
from megamerge.models import MergeDNA, MergeDNAConfig
from megamerge.models.mergedna.token_merging import set_gate_gradient

ARMS = ("gate", "no_gate_gradient")


def small_config(dim: int = 32, merge_temperature: float = 0.1) -> MergeDNAConfig:
    return MergeDNAConfig(dim=dim, n_heads=2, ffn_dim=2 * dim, grouping_dim=16, local_encoder_layers=2,
                          latent_encoder_layers=1, latent_decoder_layers=1, local_decoder_layers=1,
                          merge_temperature=merge_temperature)


def train_on_pairs(steps: int, seed: int, gate_gradient: bool = True, length: int = 64, batch: int = 16,
                   lr: float = 3e-3, merge_temperature: float = 0.1, progress: bool = False) -> MergeDNA:
    """The small model trained `steps` AdamW steps on paired_bases with compute_losses' loss."""
    torch.manual_seed(seed)
    model = MergeDNA(small_config(merge_temperature=merge_temperature))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    data = torch.Generator().manual_seed(1000 + seed)
    set_gate_gradient(gate_gradient)
    try:
        for _ in tqdm(range(steps), desc=f"seed {seed}", disable=not progress, file=sys.stderr):
            ids, _ = paired_bases(data, batch, length)
            loss = model.compute_losses(ids)["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    finally:
        set_gate_gradient(True)
    return model


@torch.no_grad()
def score_tokenizers(model: MergeDNA, samples: int = 64, length: int = 64, random_draws: int = 3) -> dict:
    """MTR and pair agreement of the learned, random and fixed merges on fresh paired sequences
    (random: the mean over `random_draws` draws)."""
    ids, pair_start = paired_bases(torch.Generator().manual_seed(12345), samples, length)
    model.eval()
    result = {}
    try:
        for decisions in ("learned", "random", "fixed"):
            model.cfg.merge_decisions = decisions
            runs = []
            for draw in range(random_draws if decisions == "random" else 1):
                torch.manual_seed(draw)
                mtr = float(model.compute_losses(ids)["mtr"])
                targets = model.token_targets(torch.full((samples,), length))
                assign = model.local_encoder(ids, targets).assign  # [samples, length]
                runs.append((mtr, boundary_agreement(assign, pair_start)))
            result[decisions] = {"mtr": statistics.fmean(r[0] for r in runs),
                                 "pair_agreement": statistics.fmean(r[1] for r in runs)}
    finally:
        model.cfg.merge_decisions = "learned"
        model.train()
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300, help="training steps per run")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds, one run per seed and arm")
    ap.add_argument("--out", type=Path, default=None, help="write the runs and medians here as JSON")
    ap.add_argument("--merge-temperature", type=float, default=0.1,
                    help="the straight-through gate's temperature (MergeDNAConfig.merge_temperature)")
    ap.add_argument("--arms", default=",".join(ARMS), help="which arms to run, comma-separated")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    arms = args.arms.split(",")
    runs = {arm: [] for arm in arms}
    for arm in arms:
        for seed in seeds:
            start = time.perf_counter()
            model = train_on_pairs(args.steps, seed, gate_gradient=arm == "gate",
                                   merge_temperature=args.merge_temperature, progress=True)
            scores = score_tokenizers(model)
            runs[arm].append({"seed": seed, "seconds": round(time.perf_counter() - start, 1), **scores})
            print(arm, seed, json.dumps(scores), flush=True)
    medians = {arm: {d: {k: statistics.median(r[d][k] for r in runs[arm]) for k in ("mtr", "pair_agreement")}
                     for d in ("learned", "random", "fixed")} for arm in arms}
    print(json.dumps(medians, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        record = {"steps": args.steps, "seeds": seeds, "merge_temperature": args.merge_temperature,
                  "runs": runs, "medians": medians}
        args.out.write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
