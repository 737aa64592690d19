"""Scoring a list of variants against a reference with one model: which variants can be scored (the
rest counted by reason, with their lines), their windows batch by batch, both strands averaged on
request."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from megamerge.models.registry import family_of_model
from megamerge.variant_scoring.reference import missing_contig_hint, reference_mismatch
from megamerge.variant_scoring.scorers import SCORERS, Score, Scorer
from megamerge.variant_scoring.tally import Tally
from megamerge.variant_scoring.variants import Variant
from megamerge.variant_scoring.windows import variant_windows

ALT_BASES = re.compile(r"[ACGTacgt]+")
REF_BASES = re.compile(r"[ACGTNacgtn]+")
REF_MISMATCH = "REF disagrees with the FASTA"
CLIPPED = "scored with a window clipped at a contig end (a shorter flank on that side)"


@dataclass
class ScoredVariants:
    variants: list[Variant]  # the scored ones, in input order
    scores: np.ndarray  # [V, S] float64
    columns: tuple[Score, ...]  # S
    dropped: Tally  # what was not scored, and why
    clipped: Tally  # scored with a window clipped at a contig end


def allele_problem(variant: Variant) -> str | None:
    if not ALT_BASES.fullmatch(variant.alt):
        return "ALT is not a sequence of A, C, G, T (missing '.', symbolic <...>, '*', a breakend or N)"
    if not REF_BASES.fullmatch(variant.ref):
        return "REF is not a sequence of A, C, G, T, N"
    if variant.alt.upper() == variant.ref.upper():
        return "ALT equals REF"
    return None


def screen(variants: list[Variant], contigs: dict[str, np.ndarray], fasta_ids: set[str], fasta: Path,
           scorer: Scorer) -> tuple[list[Variant], Tally]:
    """(the variants `scorer` can score against the contigs, the others counted by reason)."""
    kept, dropped = [], Tally()
    for variant in variants:
        problem = allele_problem(variant)
        if problem:
            dropped.add(problem, variant.line, f"{variant.ref}>{variant.alt}")
            continue
        if variant.chrom not in contigs:
            hint = missing_contig_hint(variant.chrom, fasta_ids)
            dropped.add(f"on contig {variant.chrom!r}, which is not in {fasta}{hint}", variant.line)
            continue
        mismatch = reference_mismatch(contigs[variant.chrom], variant)
        if mismatch:
            dropped.add(REF_MISMATCH, variant.line, mismatch)
            continue
        problem = scorer.unscorable(variant)
        if problem:
            dropped.add(problem, variant.line, f"{variant.ref}>{variant.alt}")
            continue
        kept.append(variant)
    return kept, dropped


def score_variants(model: nn.Module, variants: list[Variant], contigs: dict[str, np.ndarray],
                   fasta_ids: set[str], fasta: Path, window: int, batch_size: int,
                   both_strands: bool = False, progress: bool = True) -> ScoredVariants:
    """Score every variant the model's family can score; `batch_size` variants a forward pass, each with
    its REF and ALT windows (and their reverse complements with `both_strands`, whose scores are
    averaged with the forward strand's)."""
    scorer = SCORERS[family_of_model(model).name]
    kept, dropped = screen(variants, contigs, fasta_ids, fasta, scorer)
    clipped = Tally()
    batches = []
    with tqdm(total=len(kept), desc="scoring", unit="variant", file=sys.stderr, disable=not progress) as bar:
        for start in range(0, len(kept), batch_size):
            batch = kept[start:start + batch_size]
            pairs = []
            for variant in batch:
                pair, was_clipped = variant_windows(contigs[variant.chrom], variant, window)
                pairs.append(pair)
                if was_clipped:
                    clipped.add(CLIPPED, variant.line, f"{variant.chrom}:{variant.pos}")
            if both_strands:
                pairs += [pair.reverse_complement() for pair in pairs]
            scores = scorer.score_pairs(model, pairs).double()  # [strands * B, S]
            batches.append(scores.view(-1, len(batch), scores.shape[-1]).mean(0))  # [B, S]
            bar.update(len(batch))
    scores = torch.cat(batches).numpy() if batches else np.zeros((0, len(scorer.scores)))
    return ScoredVariants(kept, scores, scorer.scores, dropped, clipped)
