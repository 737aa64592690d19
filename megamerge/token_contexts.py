"""Named contexts for the paper's Figure 2 on real sequence: which bases a context holds, and the
length of the token each of them sits in. tools/analyze_tokens.py --contexts is the command line.

    NAME=FILE.csv                  every sequence of a CSV with a `sequence` column (GUE's train / dev /
                                   test.csv; other columns are ignored)
    NAME=FILE.fa.gz                every base of a FASTA (plain or compressed, as data_prep reads it)
    NAME=FILE.fa.gz:softmasked     only its soft-masked (lower-case) bases
    NAME=FILE.fa.gz:unmasked       only its upper-case bases
    NAME=FILE.fa.gz:all            the same as no suffix

Tokenizing. A CSV sequence is tokenized whole and alone (one window when it fits --window, as
GUE's 70-300 bases do; a longer one is cut into windows as a FASTA record is). A FASTA record is cut
into windows of --window bases, as `analyze_tokens.py --fasta` cuts it: the model sees the real
sequence, soft-masked or not, and each base's token length is then attributed to a context by the
base's soft-mask bit. N bases (gaps, ambiguity codes) belong to no context; they are counted.

Limits. --max-sequences-per-context draws that many CSV rows at random (seeded); every row is still
read and checked, so a bad row anywhere is an error naming the file and the row. For a FASTA,
windows are taken in a seeded random order (the same order for every context of the file, so that
they share the windows tokenized) until the context holds --max-bases-per-context bases or more;
what is left is counted as skipped.

Units. The split-half baseline (megamerge/token_distance.py) shares out whole units, so that
neighbouring bases, which share tokens, do not land in both halves: a CSV context's units are its
sequences, a FASTA context's are its bases within blocks of `block` consecutive bases of a window.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from megamerge.token_analysis import TokenAnalysisError, per_base_token_lengths, tokenize_windows
from megamerge.vocabulary import N

SELECTIONS = ("all", "softmasked", "unmasked")
SPEC_SYNTAX = "NAME=FILE.csv or NAME=FILE.fa[.gz][:softmasked|:unmasked|:all]"


@dataclass(frozen=True)
class ContextSpec:
    name: str
    path: Path
    selection: str  # one of SELECTIONS

    @property
    def is_csv(self) -> bool:
        return self.path.suffix.lower() == ".csv"


# A piece of a unit: (window key, offset of the piece in the window, which of its bases count [n]).
Piece = tuple[tuple, int, np.ndarray]


@dataclass
class Context:
    spec: ContextSpec
    unit: str  # what one unit is, in words
    counts: dict  # sequences / bases used and skipped
    pieces: list[list[Piece]] = field(default_factory=list)  # per unit
    units: list[np.ndarray] = field(default_factory=list)  # per unit: token length of each base [n_u]


# ---------------------------------------------------------------------------------- specs
def parse_context(text: str) -> ContextSpec:
    """'NAME=FILE[:SELECTION]' -> ContextSpec. A FILE whose own name holds a colon is read as a
    file when it exists."""
    name, sep, spec = text.partition("=")
    if not sep or not name.strip() or not spec:
        raise TokenAnalysisError(f"--contexts {text!r}: expected {SPEC_SYNTAX}")
    path_text, selection = spec, "all"
    if not Path(spec).is_file():
        head, colon, tail = spec.rpartition(":")
        if colon and "/" not in tail:
            if tail not in SELECTIONS:
                raise TokenAnalysisError(f"--contexts {name}: unknown selection ':{tail}' in {spec!r} "
                                         f"(choose :{', :'.join(SELECTIONS)}; or no suffix)")
            path_text, selection = head, tail
    context = ContextSpec(name, Path(path_text), selection)
    if not context.path.is_file():
        raise TokenAnalysisError(f"--contexts {name}: {context.path}: no such file")
    if context.is_csv and selection != "all":
        raise TokenAnalysisError(f"--contexts {name}: :{selection} selects soft-masked bases of a FASTA; "
                                 f"{context.path} is a CSV, whose sequences are taken whole")
    return context


def parse_contexts(texts: list[str]) -> list[ContextSpec]:
    specs = [parse_context(text) for text in texts]
    names = [s.name for s in specs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise TokenAnalysisError(f"--contexts: the name {twice[0]!r} is given more than once; names label "
                                 "the curves and the pairs, so each must be unique")
    return specs


# ------------------------------------------------------------------------------ selecting
def _csv_context(spec: ContextSpec, windows: dict, window: int, max_sequences: int, seed: int) -> Context:
    from data_prep.fasta import InputError
    from data_prep.sequence_csv import read_sequence_csv
    from megamerge.data.shards import split_softmask
    from megamerge.sequence_embeddings import window_bounds

    try:
        # soft-mask bit dropped: a CSV context is its sequences whole
        rows = [split_softmask(codes)[0] for _, codes, _ in read_sequence_csv(spec.path)]
    except InputError as e:
        raise TokenAnalysisError(f"--contexts {spec.name}: {e}") from None
    if not rows:
        raise TokenAnalysisError(f"--contexts {spec.name}: {spec.path}: no sequences")
    picked = np.random.default_rng(seed).choice(len(rows), size=min(len(rows), max_sequences), replace=False)
    context = Context(spec, "sequence", {})
    for row in np.sort(picked).tolist():
        codes = rows[row]
        unit = []
        for a, b in window_bounds(len(codes), window):
            key = ("csv", spec.path.resolve(), row, a)
            windows[key] = codes[a:b]
            unit.append((key, 0, codes[a:b] != N))
        if any(keep.any() for _, _, keep in unit):  # an all-N sequence has no base to count
            context.pieces.append(unit)
    if not context.pieces:
        raise TokenAnalysisError(f"--contexts {spec.name}: {spec.path}: the {len(picked)} sequences drawn "
                                 "are all N")
    used = [rows[row] for row in picked.tolist()]
    context.counts = {"format": "csv", "rows": len(rows), "sequences_used": len(picked),
                      "sequences_skipped": len(rows) - len(picked),
                      "bases_used": sum(int(np.count_nonzero(c != N)) for c in used),
                      "n_bases_left_out": sum(int(np.count_nonzero(c == N)) for c in used)}
    return context


@dataclass
class _Fasta:
    codes: list[np.ndarray]  # per record: uint8 codes [n_r], soft-mask bit dropped
    masked: list[np.ndarray]  # per record: soft-masked bool [n_r]
    windows: list[tuple[int, int, int]]  # (record, start, end) of every window, in a seeded random order


def _read_fasta(path: Path, window: int, seed: int) -> _Fasta:
    from data_prep.fasta import InputError, read_fasta
    from megamerge.data.shards import split_softmask
    from megamerge.sequence_embeddings import window_bounds

    try:
        records = [split_softmask(r.codes) for r in read_fasta(path)]
    except InputError as e:
        raise TokenAnalysisError(str(e)) from None
    windows = [(r, a, b) for r, (codes, _) in enumerate(records)
               for a, b in window_bounds(len(codes), window)]
    order = np.random.default_rng(seed).permutation(len(windows))
    return _Fasta([c for c, _ in records], [m for _, m in records], [windows[i] for i in order])


def _fasta_context(spec: ContextSpec, fasta: _Fasta, windows: dict, block: int, max_bases: int,
                   warnings: list[str]) -> Context:
    from megamerge.sequence_embeddings import window_bounds

    in_selection = [np.ones(len(m), dtype=bool) if spec.selection == "all"
                    else m if spec.selection == "softmasked" else ~m for m in fasta.masked]
    keep = [chosen & (codes != N) for chosen, codes in zip(in_selection, fasta.codes)]  # per record [n_r]
    selected = sum(int(np.count_nonzero(k)) for k in keep)
    file_bases = sum(len(c) for c in fasta.codes)
    in_case = sum(int(np.count_nonzero(c)) for c in in_selection)
    case = "lower" if spec.selection == "softmasked" else "upper"
    if selected == 0:
        why = "those there are all N"
        if in_case == 0:
            why = (f"every base is {'upper' if case == 'lower' else 'lower'} case, so its case marks no "
                   f"repeats; {spec.name}={spec.path} takes all its bases")
        raise TokenAnalysisError(f"--contexts {spec.name}: {spec.path} has no {spec.selection} bases to "
                                 f"count ({why})")
    if spec.selection != "all" and in_case == file_bases:
        warnings.append(f"--contexts {spec.name}: every base of {spec.path} is {case} case, so "
                        f":{spec.selection} is the whole file: its case marks no repeats")
    used, taken = 0, []
    for r, a, b in fasta.windows:
        if used >= max_bases:
            break
        count = int(np.count_nonzero(keep[r][a:b]))
        if count:
            taken.append((r, a, b))
            used += count
    context = Context(spec, f"the context's bases in a block of {block} consecutive bases", {})
    for r, a, b in sorted(taken):
        key = ("fasta", spec.path.resolve(), r, a)
        windows[key] = fasta.codes[r][a:b]
        for s, e in window_bounds(b - a, block):
            if keep[r][a + s:a + e].any():
                context.pieces.append([(key, s, keep[r][a + s:a + e])])
    context.counts = {"format": "fasta", "records": len(fasta.codes), "file_bases": file_bases,
                      "selected_bases": selected, "bases_used": used, "bases_skipped": selected - used,
                      "windows_tokenized": len(taken),
                      "n_bases_left_out": sum(int(np.count_nonzero(c & (codes == N)))
                                              for c, codes in zip(in_selection, fasta.codes))}
    return context


# ------------------------------------------------------------------------------ tokenizing
def context_token_lengths(model, specs: list[ContextSpec], *, window: int, block: int, max_sequences: int,
                          max_bases: int, seed: int, batch_size: int, device, progress: bool = True
                          ) -> tuple[list[Context], list[str]]:
    """Select every context's bases, tokenize each window they need once (contexts of one FASTA share
    its windows), and fill each context's units with its bases' token lengths. -> (contexts, warnings)."""
    windows: dict[tuple, np.ndarray] = {}  # key -> codes [n_w]
    fastas: dict[Path, _Fasta] = {}
    contexts, warnings = [], []
    for spec in specs:
        if spec.is_csv:
            contexts.append(_csv_context(spec, windows, window, max_sequences, seed))
            continue
        fasta = fastas.get(spec.path.resolve())
        if fasta is None:
            fasta = fastas[spec.path.resolve()] = _read_fasta(spec.path, window, seed)
        contexts.append(_fasta_context(spec, fasta, windows, block, max_bases, warnings))
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    keys = list(windows)
    assigned = tokenize_windows(model, [windows[k] for k in keys], batch_size, device, progress)
    lengths = {key: per_base_token_lengths(assign) for key, assign in zip(keys, assigned)}  # [n_w] each
    for context in contexts:
        context.units = [np.concatenate([lengths[key][offset:offset + keep.size][keep]
                                         for key, offset, keep in unit]) for unit in context.pieces]
    return contexts, warnings
