"""What MergeDNA's learned tokenizer (the Local Encoder) does to real sequence: token lengths per
region class, token boundaries against annotated region boundaries, compression per species, and
how two models (checkpoints of one run, say) place their boundaries differently on the same bases.
tools/analyze_tokens.py and tools/compare_tokenizers.py are the command lines; this module holds
the logic.

Tokenizing. Each FASTA record is cut into consecutive windows of `window` bases (the last one
shorter), as in megamerge/sequence_embeddings.py; each window goes through the Local Encoder alone
in eval mode, which merges it to the fixed ratio L = round(eval_compression * bases). A window's
tokens get ids after those of the windows before it, so `token_ids[n]` numbers the tokens of the
whole record. A window edge is therefore always a token boundary (one forced boundary per window).

Two weightings of a token-length histogram (DESIGN.md, Figure 2):
    per_token  bin k = the share of tokens whose length is k bases. At L = N/2 the mean is 2 bases,
               so this histogram can never peak at 4, 7 or 9 as the paper's Figure 2 does.
    per_base   bin k = the share of bases that sit in a token of length k (a long token counts once
               per base it covers). The paper's peaks are only reachable with this weighting (or an
               L that is not fixed).
The last bin holds every length >= HIST_MAX.

Comparing two tokenizers. A position is a gap between two adjacent bases of one window (window
edges are left out: both models always put a boundary there). A model puts a token boundary at a
gap when the bases on its two sides sit in different tokens. The boundary change rate is the share
of positions where exactly one of the two models has a boundary: 0 for identical merge decisions,
and at a fixed ratio (both models make the same number of tokens per window) a moved boundary
counts twice, once where it was and once where it went.

Regions. A token that straddles a region boundary is shared between the classes in proportion to
its bases: each base adds 1/len(its token) tokens to its class, so a class's token count can be
fractional and sums, over a tiling annotation, to the record's token count.
"""

from __future__ import annotations

import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from megamerge.vocabulary import PAD

HIST_MAX = 16  # histogram bins 1 .. HIST_MAX - 1, then "HIST_MAX+"
HIST_BINS = [str(k) for k in range(1, HIST_MAX)] + [f"{HIST_MAX}+"]
WEIGHTINGS = {
    "per_token": "bin k = share of tokens that are k bases long",
    "per_base": "bin k = share of bases that sit in a token k bases long",
}


class TokenAnalysisError(ValueError):
    """Bad input for an analysis run: the message names the file, line or flag."""


@dataclass(frozen=True)
class Region:
    record: str
    start: int  # 0-based, half-open
    end: int
    cls: str


# ------------------------------------------------------------------------------------ inputs
def read_bed(path: Path) -> list[Region]:
    """BED with at least 4 columns (the fourth is the region class); '#', 'track' and 'browser'
    lines are skipped."""
    regions = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip() or line.startswith(("#", "track", "browser")):
            continue
        fields = line.split("\t")
        if len(fields) < 4:
            raise TokenAnalysisError(f"{path}: line {number}: need record, start, end, class "
                                     f"(tab-separated), got {len(fields)} column(s)")
        try:
            start, end = int(fields[1]), int(fields[2])
        except ValueError:
            raise TokenAnalysisError(f"{path}: line {number}: start and end must be integers, got "
                                     f"{fields[1]!r}, {fields[2]!r}") from None
        if not 0 <= start < end:
            raise TokenAnalysisError(f"{path}: line {number}: need 0 <= start < end, got {start}, {end}")
        regions.append(Region(fields[0], start, end, fields[3]))
    if not regions:
        raise TokenAnalysisError(f"{path}: no BED intervals")
    return regions


def read_fasta_codes(path: Path) -> dict[str, np.ndarray]:
    """record id -> uint8 tokenizer codes (IUPAC ambiguity codes become N, as in data_prep; the
    soft-mask bit read_fasta sets on lower-case bases is dropped)."""
    from data_prep.fasta import InputError, read_fasta
    from megamerge.data.shards import split_softmask

    try:
        records = {r.record_id: split_softmask(r.codes)[0] for r in read_fasta(Path(path))}
    except InputError as e:
        raise TokenAnalysisError(str(e)) from None
    if not records:
        raise TokenAnalysisError(f"{path}: no sequences")
    return records


def first_bases(records: dict[str, np.ndarray], max_bases: int | None) -> dict[str, np.ndarray]:
    """The records in order, cut after max_bases bases in all (None: all of them)."""
    if max_bases is None:
        return records
    out, left = {}, max_bases
    for name, codes in records.items():
        if left <= 0:
            break
        out[name], left = codes[:left], left - min(left, len(codes))
    return out


# ------------------------------------------------------------------------------- tokenizing
def load_tokenizer(model_dir: Path, device: str = "auto", eval_compression: float | None = None,
                   merge_selection: str | None = None):
    """A portable MergeDNA model in eval mode on `device` (cpu, cuda, cuda:N, or auto), with its
    fixed inference ratio L/N replaced by eval_compression and its merge selection (per_window, the
    paper's per-window budget, or global_rank, one ranking across the window) by merge_selection if
    given -> (model, torch.device). A CARMANIA model, which has no learned tokenizer, is refused."""
    from megamerge.portable import load_portable, read_portable_config

    config = read_portable_config(model_dir)
    if config["family"] != "mergedna":
        raise TokenAnalysisError(f"--model {model_dir} holds a {config['family']} model, which has no "
                                 "learned tokenizer; token analysis needs a MergeDNA model")
    resolved = torch.device("cuda" if device == "auto" and torch.cuda.is_available()
                            else "cpu" if device == "auto" else device)
    model = load_portable(model_dir, device=resolved)
    if eval_compression is not None:
        model.cfg.eval_compression = eval_compression
    if merge_selection is not None:
        model.cfg.merge_selection = merge_selection
    return model, resolved


@torch.no_grad()
def tokenize_batch(model, batch: list[np.ndarray], device) -> list[np.ndarray]:
    """Local Encoder in eval mode on right-padded windows -> base -> token index [n_w] per window."""
    width = max(len(w) for w in batch)
    ids = torch.full((len(batch), width), PAD, dtype=torch.long)
    for row, codes in enumerate(batch):
        ids[row, :len(codes)] = torch.from_numpy(codes.astype(np.int64))
    ids = ids.to(device)
    valid = ids != PAD
    state = model.local_encoder(ids, model.token_targets(valid.sum(1)))
    assign = state.assign.cpu().numpy()  # [B, width]
    return [assign[row, :len(codes)] for row, codes in enumerate(batch)]


def tokenize_windows(model, windows: list[np.ndarray], batch_size: int, device,
                     progress: bool = True, desc: str = "tokenizing") -> list[np.ndarray]:
    """Each window of codes [n_w] alone through the Local Encoder -> its base -> token index [n_w]."""
    model.eval()
    order = sorted(range(len(windows)), key=lambda i: -len(windows[i]))  # similar lengths share a batch
    assigned: list = [None] * len(windows)
    with tqdm(total=sum(len(w) for w in windows), desc=desc, unit="bp", file=sys.stderr,
              disable=not progress) as bar:
        for first in range(0, len(order), batch_size):
            batch = order[first:first + batch_size]
            for i, assign in zip(batch, tokenize_batch(model, [windows[i] for i in batch], device)):
                assigned[i] = assign
            bar.update(sum(len(windows[i]) for i in batch))
    return assigned


def tokenize_records(model, records: dict[str, np.ndarray], window: int, batch_size: int, device,
                     progress: bool = True, desc: str = "tokenizing") -> dict[str, np.ndarray]:
    """record id -> token id of every base [n] (int64, numbering the record's tokens in order)."""
    from megamerge.sequence_embeddings import window_bounds

    pieces = [(name, a, codes[a:b]) for name, codes in records.items()
              for a, b in window_bounds(len(codes), window)]
    assigned = tokenize_windows(model, [codes for _, _, codes in pieces], batch_size, device, progress, desc)
    token_ids = {name: np.empty(len(codes), dtype=np.int64) for name, codes in records.items()}
    offsets = dict.fromkeys(records, 0)
    for (name, start, codes), assign in zip(pieces, assigned):  # windows of a record come in order
        token_ids[name][start:start + len(codes)] = assign + offsets[name]
        offsets[name] += int(assign.max()) + 1
    return token_ids


def per_base_token_lengths(token_ids: np.ndarray) -> np.ndarray:
    """token_ids [n] (contiguous runs) -> the length in bases of the token each base sits in [n]."""
    return np.bincount(token_ids)[token_ids]


# ------------------------------------------------------------------------------- statistics
def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    """Median of sorted values with weights; the midpoint of the two middle values when the
    cumulative weight hits half exactly (as the plain median of an even count does)."""
    keep = weights > 0
    values, cumulative = values[keep], np.cumsum(weights[keep])
    half = cumulative[-1] / 2
    lower = values[np.searchsorted(cumulative, half * (1 - 1e-12), side="left")]
    upper = values[min(np.searchsorted(cumulative, half * (1 + 1e-12), side="right"), values.size - 1)]
    return float(lower + upper) / 2


def length_stats(lengths: np.ndarray) -> dict:
    """Statistics of per-base token lengths [n] (one entry per base: its token's length)."""
    if lengths.size == 0:
        return {"bases": 0, "tokens": 0.0}
    base_counts = np.bincount(lengths).astype(np.float64)  # [max + 1]: bases in tokens of length k
    k = np.arange(base_counts.size)
    token_counts = np.divide(base_counts, k, out=np.zeros_like(base_counts), where=k > 0)
    tokens = float(token_counts.sum())

    def histogram(counts: np.ndarray) -> list[float]:
        binned = np.zeros(HIST_MAX)
        binned[:HIST_MAX - 1] = np.pad(counts[1:HIST_MAX], (0, max(0, HIST_MAX - counts.size)))[:HIST_MAX - 1]
        binned[HIST_MAX - 1] = counts[HIST_MAX:].sum()
        return [round(float(v), 6) for v in binned / binned.sum()]

    return {
        "bases": int(lengths.size),
        "tokens": round(tokens, 3),
        "mean_token_length": round(lengths.size / tokens, 4),  # per token: bases / tokens
        "median_token_length": _weighted_median(k, token_counts),  # per token
        "max_token_length": int(lengths.max()),
        "mean_token_length_per_base": round(float(lengths.mean()), 4),  # the token a base sits in
        "median_token_length_per_base": _weighted_median(k, base_counts),
        "histogram_per_token": histogram(token_counts),
        "histogram_per_base": histogram(base_counts),
    }


def class_masks(regions: list[Region], record_lengths: dict[str, int]) -> dict[str, dict[str, np.ndarray]]:
    """class -> record -> bool mask [n] of the bases the class's intervals cover (overlaps count once)."""
    masks: dict[str, dict[str, np.ndarray]] = {}
    for region in regions:
        n = record_lengths[region.record]
        mask = masks.setdefault(region.cls, {}).setdefault(region.record, np.zeros(n, dtype=bool))
        mask[region.start:region.end] = True
    return masks


def region_stats(regions: list[Region], lengths: dict[str, np.ndarray]) -> dict:
    """Per region class: interval count and length_stats over the bases its intervals cover."""
    masks = class_masks(regions, {name: len(v) for name, v in lengths.items()})
    out = {}
    for cls in sorted(masks):
        covered = np.concatenate([lengths[record][mask] for record, mask in masks[cls].items()])
        out[cls] = {"intervals": sum(r.cls == cls for r in regions), **length_stats(covered)}
    return out


def check_regions(regions: list[Region], record_lengths: dict[str, int], bed: Path) -> list[str]:
    """Refuse intervals past their record's end; -> BED records absent from the FASTA (skipped)."""
    for region in regions:
        n = record_lengths.get(region.record)
        if n is not None and region.end > n:
            raise TokenAnalysisError(f"{bed}: interval {region.record}:{region.start}-{region.end} ends past "
                                     f"the record's {n} bases in the FASTA")
    return sorted({r.record for r in regions} - set(record_lengths))


# ------------------------------------------------------------------------------- boundaries
def _has_neighbour(points: np.ndarray, others: np.ndarray, tolerance: int) -> np.ndarray:
    """For each of points [P]: is some element of sorted others within `tolerance`?"""
    if others.size == 0:
        return np.zeros(points.size, dtype=bool)
    right = np.searchsorted(others, points).clip(max=others.size - 1)
    left = (right - 1).clip(min=0)
    nearest = np.minimum(np.abs(others[right] - points), np.abs(others[left] - points))
    return nearest <= tolerance


def boundary_scores(token_ids: dict[str, np.ndarray], regions: list[Region], tolerance: int) -> dict:
    """Precision, recall and F1 of token boundaries against annotation boundaries, over the records
    the BED annotates. A boundary at b lies between bases b-1 and b (0 < b < n): a token starts at b,
    or an interval starts or ends at b. A token boundary is correct if an annotation boundary lies
    within `tolerance` bases; an annotation boundary is found if a token boundary does.
    chance_precision is the precision of boundaries placed at random positions."""
    hits_token = hits_annot = n_token = n_annot = near_positions = positions = 0
    for record in sorted({r.record for r in regions} & set(token_ids)):
        ids = token_ids[record]
        n = ids.size
        tokens = np.flatnonzero(np.diff(ids)) + 1
        annot = np.unique([p for r in regions if r.record == record for p in (r.start, r.end) if 0 < p < n])
        hits_token += int(_has_neighbour(tokens, annot, tolerance).sum())
        hits_annot += int(_has_neighbour(annot, tokens, tolerance).sum())
        n_token, n_annot = n_token + tokens.size, n_annot + annot.size
        near_positions += int(_has_neighbour(np.arange(1, n), annot, tolerance).sum())
        positions += max(n - 1, 0)
    precision = hits_token / n_token if n_token else 0.0
    recall = hits_annot / n_annot if n_annot else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"tolerance_bases": tolerance, "token_boundaries": n_token, "annotation_boundaries": n_annot,
            "precision": round(precision, 6), "recall": round(recall, 6), "f1": round(f1, 6),
            "chance_precision": round(near_positions / positions, 6) if positions else 0.0}


# ------------------------------------------------------------------------ comparing two tokenizers
def window_gaps(token_ids: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """token_ids [n] of one record, tokenized in windows of `window` bases -> (boundary, inside),
    both bool [n - 1] over the gaps between bases p and p + 1: boundary, the two sit in different
    tokens; inside, they sit in one window (window edges are boundaries by construction)."""
    from megamerge.sequence_embeddings import window_bounds

    boundary = token_ids[1:] != token_ids[:-1]  # [n - 1]
    inside = np.ones(max(token_ids.size - 1, 0), dtype=bool)  # [n - 1]
    for start, _ in window_bounds(token_ids.size, window)[1:]:
        inside[start - 1] = False  # the gap before the window's first base
    return boundary, inside


def boundary_changes(a: dict[str, np.ndarray], b: dict[str, np.ndarray], window: int) -> dict:
    """Two tokenizations of the same records (record -> token id of every base, as tokenize_records
    gives with `window`) -> positions (gaps inside windows), each tokenization's boundaries there,
    those only one of them has, and boundary_change_rate = (only_a + only_b) / positions."""
    if a.keys() != b.keys() or any(a[name].size != b[name].size for name in a):
        raise TokenAnalysisError("the two tokenizations cover different records or lengths")
    counts = dict.fromkeys(("positions", "boundaries_a", "boundaries_b", "only_a", "only_b"), 0)
    for name, ids_a in a.items():
        boundary_a, inside = window_gaps(ids_a, window)
        boundary_b = window_gaps(b[name], window)[0]
        boundary_a, boundary_b = boundary_a[inside], boundary_b[inside]  # [positions of this record]
        for key, gaps in (("positions", inside), ("boundaries_a", boundary_a), ("boundaries_b", boundary_b),
                          ("only_a", boundary_a & ~boundary_b), ("only_b", boundary_b & ~boundary_a)):
            counts[key] += int(gaps.sum())
    changed = counts["only_a"] + counts["only_b"]
    return {**counts, "boundary_change_rate": changed / counts["positions"] if counts["positions"] else 0.0}


# ------------------------------------------------------------------------------ species data
def species_compression(model, data_dir: Path, split: str, max_samples: int, batch_size: int, device,
                        progress: bool = True) -> dict:
    """Compression (bases per token) per species over up to max_samples samples of a prepared
    shards directory's split, each sample tokenized whole as the trainer would see it."""
    from megamerge.data.shards import CorruptShardError, read_shard, split_shards, split_softmask

    def refuse(entry, problem):
        raise CorruptShardError(f"{entry.path}: {problem}")

    try:
        entries = split_shards(data_dir, split)
    except (FileNotFoundError, ValueError) as e:
        raise TokenAnalysisError(f"--data: {e}") from None
    totals: dict[str, dict] = {}
    model.eval()
    samples = (sample for entry in entries for sample in read_shard(entry, 0, 1, refuse))
    with tqdm(total=max_samples, desc=f"{split} samples", unit="sample", file=sys.stderr,
              disable=not progress) as bar:
        batch: list = []
        for done, sample in enumerate(samples, start=1):
            # codes, soft-mask bit dropped
            batch.append((sample.meta["species"], split_softmask(sample.seq)[0]))
            if len(batch) == batch_size or done == max_samples:
                _add_species_batch(model, batch, device, totals)
                bar.update(len(batch))
                batch = []
            if done == max_samples:
                break
        if batch:
            _add_species_batch(model, batch, device, totals)
            bar.update(len(batch))
    for t in totals.values():
        t["bases_per_token"] = round(t["bases"] / t["tokens"], 4)
        t["mean_token_length_per_base"] = round(t.pop("length_sum") / t["bases"], 4)
    return dict(sorted(totals.items()))


def _add_species_batch(model, batch: list[tuple[str, np.ndarray]], device, totals: dict) -> None:
    assigns = tokenize_batch(model, [codes for _, codes in batch], device)
    for (species, _), assign in zip(batch, assigns):
        t = totals.setdefault(species, {"samples": 0, "bases": 0, "tokens": 0, "length_sum": 0})
        t["samples"] += 1
        t["bases"] += int(assign.size)
        t["tokens"] += int(assign.max()) + 1
        t["length_sum"] += int(per_base_token_lengths(assign).sum())


# ------------------------------------------------------------------------------------ plot
def plot_histograms(stats: dict[str, dict], path: Path, mode: str,
                    weightings: tuple[str, ...] = tuple(WEIGHTINGS)) -> None:
    """One panel per weighting (per-token, per-base), one line per class or context, to a PNG. The
    paper's Figure 2 is the per-base panel alone."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(weightings), figsize=(6.5 * len(weightings), 4.8), sharex=True,
                             squeeze=False)
    x = np.arange(1, HIST_MAX + 1)
    for ax, weighting in zip(axes[0], weightings):
        for name, s in stats.items():
            if s.get("bases"):
                ax.plot(x, s[f"histogram_{weighting}"], marker="o", markersize=3,
                        label=f"{name} (mean {s['mean_token_length']:.2f} bp/token, "
                        f"{s['mean_token_length_per_base']:.2f} per base)")
        ax.set_title(f"{weighting.replace('_', '-')} weighting: "
                     f"{WEIGHTINGS[weighting].replace('bin k = ', '')}", fontsize=9)
        ax.set_xticks(x, HIST_BINS, fontsize=8)
        ax.set_xlabel("token length (bases)")
        ax.set_ylabel("normalised frequency")
        ax.grid(alpha=0.3)
    axes[0, -1].legend(fontsize=7)
    title = f"MergeDNA Local Encoder token lengths ({mode})"
    wide = len(weightings) > 1
    fig.suptitle(textwrap.fill(title, 110 if wide else 75), fontsize=11 if wide else 9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
