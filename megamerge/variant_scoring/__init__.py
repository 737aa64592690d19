"""Zero-shot variant-effect scoring with a portable MergeDNA or CARMANIA model (tools/score_variants.py is
the command line; issue 29, item 1).

    variants.py       the variants: a VCF (cyvcf2) or a TSV table, one `Variant` per ALT, with its line
    reference.py      the contigs the variants name (data_prep's FASTA reader), the REF check
    windows.py        the REF and ALT windows around a variant; clipping at contig ends; reverse complement
    scorers.py        the scores per family: how MergeDNA's mask is chosen, CARMANIA's indel length effect
    run.py            which variants are scored (the rest counted by reason), batches, strand averaging
    tally.py          variants counted by reason with their input lines (dropped, clipped)
    label_metrics.py  AUROC and AUPRC of each score against --labels
    outputs.py        the TSV and the annotated VCF
"""
