#!/usr/bin/env python
"""Score variants zero-shot with a portable MergeDNA or CARMANIA model; write a TSV (and an annotated VCF).

    python tools/score_variants.py --model PORTABLE_DIR --fasta ref.fa.gz --vcf calls.vcf.gz --out scores.tsv
    python tools/score_variants.py --model PORTABLE_DIR --fasta ref.fa --table calls.tsv --out scores.tsv \\
        --labels label --both-strands

Output: chrom, pos (1-based, as in the VCF), ref, alt, then one column per score (one row per scored
ALT allele, in input order). MergeDNA: masked_marginal, embedding_distance (SNVs only). CARMANIA: llr,
embedding_distance (indels too). How the mask is chosen and CARMANIA's indel length effect:
megamerge/variant_scoring/scorers.py; the windows and their clipping at contig ends:
megamerge/variant_scoring/windows.py.

Variants whose REF disagrees with the FASTA, on a contig the FASTA lacks, with a symbolic or missing
ALT, or that the family cannot score are never scored: they are counted by reason, with their input
lines, at the end. --labels reports AUROC and AUPRC of each score (label 1 = damaging).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from data_prep.fasta import InputError
from megamerge.output_dirs import check_output_file, written_then_renamed
from megamerge.portable import load_portable, read_portable_config
from megamerge.variant_scoring.label_metrics import LabelMetricsError, label_metrics
from megamerge.variant_scoring.outputs import is_score_table, is_scored_vcf, write_table, write_vcf
from megamerge.variant_scoring.reference import load_contigs
from megamerge.variant_scoring.run import REF_MISMATCH, score_variants
from megamerge.variant_scoring.scorers import SCORERS
from megamerge.variant_scoring.variants import read_table, read_vcf

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
DEFAULT_WINDOW = 4096
TOOL = "score_variants.py"


class ScoreVariantsError(ValueError):
    """A run that cannot go on: one line naming the flag or file."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Score the variants of a VCF or TSV table zero-shot with a portable MergeDNA (masked "
        "marginal) or CARMANIA (log-likelihood ratio) model, plus an embedding distance; write a TSV.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", type=Path, required=True, help="portable MergeDNA or CARMANIA directory")
    parser.add_argument("--fasta", type=Path, required=True,
                        help="the reference FASTA(.gz) the variants are on")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--vcf", type=Path, help="variants: VCF or bgzipped/gzipped VCF")
    source.add_argument("--table", type=Path,
                        help="variants: tab-separated table with a header holding chrom, pos (1-based), ref, "
                        "alt")
    parser.add_argument("--out", type=Path, required=True, help="the TSV to write")
    parser.add_argument("--out-vcf", type=Path,
                        help="also write the input VCF with one INFO field per score (.gz: bgzipped)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier output of this tool at --out / --out-vcf (any other file is "
                        "refused)")
    parser.add_argument("--labels", metavar="NAME",
                        help="INFO field (--vcf) or column (--table) holding 0/1 labels (1 = damaging): "
                        "report AUROC and AUPRC of each score")
    parser.add_argument("--window", type=int, default=None,
                        help="bases per SNV window, the variant in the middle (an even number loses one "
                        f"base); default: the model's training --seq-length, else {DEFAULT_WINDOW}")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="variants per forward pass (each brings its REF and ALT windows, both strands' "
                        "with --both-strands)")
    parser.add_argument("--both-strands", action="store_true",
                        help="average each score over the forward and reverse-complement strands")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, or auto")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="compute precision")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--report-lines", type=int, default=10, metavar="N",
                        help="input lines listed per reason in the end-of-run report of dropped variants "
                        "(0: all of them)")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error("--batch-size must be >= 1")
    if args.report_lines < 0:
        parser.error("--report-lines must be >= 0")
    if args.window is not None and args.window < 3:
        parser.error("--window must be >= 3: the variant and a flank on each side")
    if args.out_vcf is not None and args.vcf is None:
        parser.error("--out-vcf annotates the input VCF: it needs --vcf, not --table")
    if args.out_vcf is not None and args.out_vcf.resolve() == args.out.resolve():
        parser.error("--out and --out-vcf name the same file")
    return args


def check_outputs(args: argparse.Namespace) -> None:
    inputs = [p for p in (args.model, args.fasta, args.vcf, args.table) if p is not None]
    check_output_file(args.out, inputs, args.overwrite, is_score_table, TOOL, "--out")
    if args.out_vcf is not None:
        check_output_file(args.out_vcf, inputs, args.overwrite, is_scored_vcf, TOOL, "--out-vcf")


def torch_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ScoreVariantsError(f"--device {name}: not a device (cpu, cuda, cuda:N or auto)") from None


def model_family(model_dir: Path) -> tuple[str, dict]:
    config = read_portable_config(model_dir)
    family = config["family"]
    if family not in SCORERS:
        raise ScoreVariantsError(f"--model {model_dir}: a {family} model; variants are scored with "
                                 f"{' or '.join(SCORERS)}")
    if config.get("encoder_only"):
        raise ScoreVariantsError(f"--model {model_dir}: converted with --encoder-only; the masked marginal "
                                 "needs the decoders (convert again without --encoder-only)")
    return family, config


def report(result, labels: str | None, source: Path, shown: int) -> list[str]:
    """The end-of-run lines: what was scored, dropped and clipped (`shown` input lines per reason, 0: all),
    and the label metrics."""
    names = ", ".join(score.name for score in result.columns)
    total = len(result.variants) + len(result.dropped)
    lines = [f"scored {len(result.variants)} of {total} variants (one per ALT allele) of {source}: {names}"]
    if len(result.dropped):
        lines.append(f"dropped {len(result.dropped)}, never scored")
        lines += [f"  {line}" for line in result.dropped.report(shown or len(result.dropped))]
    lines += result.clipped.report(shown or len(result.clipped))
    if labels is not None:
        try:
            metrics = label_metrics(result.scores, [v.label for v in result.variants], result.columns)
        except LabelMetricsError as e:
            return [*lines, f"--labels {labels}: {e}"]
        first = next(iter(metrics.values()))
        lines.append(f"--labels {labels}: {first['labelled']} labelled variants, {first['positives']} "
                     f"labelled 1 (damaging); likelihood scores read negated")
        lines += [f"  {name}: AUROC {m['auroc']:.4f}  AUPRC {m['auprc']:.4f}" for name, m in metrics.items()]
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    source = args.vcf or args.table
    try:
        check_outputs(args)
        device = torch_device(args.device)
        family, config = model_family(args.model)
        window = args.window or int((config.get("training_args") or {}).get("seq_length") or DEFAULT_WINDOW)
        variants = read_vcf(args.vcf, args.labels) if args.vcf else read_table(args.table, args.labels)
        if not variants:
            raise ScoreVariantsError(f"{source}: no variants")
        contigs, fasta_ids = load_contigs(args.fasta, {v.chrom for v in variants})
        model = load_portable(args.model, device=device, dtype=DTYPES[args.dtype])
        result = score_variants(model, variants, contigs, fasta_ids, args.fasta, window, args.batch_size,
                                args.both_strands, progress=not args.no_progress)
        lines = report(result, args.labels, source, args.report_lines)
        if 2 * len(result.dropped.lines(REF_MISMATCH)) > len(variants):
            lines.append(f"most REF alleles disagree with {args.fasta}: is it the reference of {source}?")
        if not result.variants:
            raise ScoreVariantsError("no variant could be scored, nothing written: "
                                     + "; ".join(line.strip() for line in lines[1:]))
        with written_then_renamed(args.out) as partial:
            write_table(partial, result)
            if args.out_vcf is not None:
                settings = (f'model="{args.model.resolve()}",family={family},window={window},'
                            f"both_strands={args.both_strands},dtype={args.dtype}")
                with written_then_renamed(args.out_vcf) as partial_vcf:
                    write_vcf(partial_vcf, args.vcf, result, settings, args.out_vcf.name.endswith(".gz"))
    except (ValueError, OSError, InputError) as e:  # OSError: an unwritable --out, a full disk
        print(f"{TOOL}: error: {e}", file=sys.stderr)
        return 2
    print("\n".join(lines), file=sys.stderr)
    print(f"wrote {args.out}" + (f" and {args.out_vcf}" if args.out_vcf else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
