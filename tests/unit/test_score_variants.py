"""tools/score_variants.py and megamerge/variant_scoring: the masked marginal against a hand computation
of AMTM's pass 3, CARMANIA's LLR (indels too) against the model's forward, batched = unbatched, strand
averaging symmetric under reverse complement, every bad input named with nothing half-written, labels
(AUROC / AUPRC), and the command line end to end on tiny random models of both families."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from megamerge.models import Carmania, CarmaniaConfig, MergeDNA, MergeDNAConfig
from megamerge.models.mergedna.objective import mask_bases
from megamerge.portable import save_portable
from megamerge.variant_scoring.label_metrics import LabelMetricsError, label_metrics
from megamerge.variant_scoring.run import score_variants
from megamerge.variant_scoring.scorers import EMBEDDING_DISTANCE, LLR, MASKED_MARGINAL
from megamerge.variant_scoring.variants import Variant
from megamerge.vocabulary import decode, encode, encode_tensor, reverse_complement
from tools.score_variants import main

pytestmark = pytest.mark.usefixtures("one_thread")

WINDOW = 41  # 20 bases of flank on each side
FLANK = 20
CARMANIA_SMALL = {"dim": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "ffn_dim": 160, "window": 8}
VCF_HEADER = ("##fileformat=VCFv4.2\n##contig=<ID=chr1>\n##contig=<ID=chr2>\n##contig=<ID=chrZ>\n"
              '##INFO=<ID=LAB,Number=1,Type=Integer,Description="1 = damaging">\n'
              "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n")
HEADER_LINES = VCF_HEADER.count("\n")


def rc(seq: str) -> str:
    return decode(reverse_complement(encode_tensor(seq)))


@pytest.fixture(scope="module")
def genome() -> dict[str, str]:
    rng = np.random.default_rng(0)
    return {"chr1": "".join(rng.choice(list("ACGT"), 300)), "chr2": "".join(rng.choice(list("ACGT"), 120))}


@pytest.fixture(scope="module")
def mergedna() -> MergeDNA:
    torch.manual_seed(0)
    return MergeDNA(MergeDNAConfig.from_preset("tiny", dim=64, n_heads=4, ffn_dim=160)).eval()


@pytest.fixture(scope="module")
def carmania() -> Carmania:
    torch.manual_seed(0)
    model = Carmania(CarmaniaConfig(**CARMANIA_SMALL))
    with torch.no_grad():  # a head far from uniform, so log-likelihoods differ visibly between windows
        model.output.weight.normal_(std=1.0)
    return model.eval()


@pytest.fixture(scope="module")
def portable(mergedna, carmania, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("score_variants")
    return {"mergedna": save_portable(mergedna, root / "mergedna"),
            "carmania": save_portable(carmania, root / "carmania")}


@pytest.fixture(scope="module")
def fasta(genome, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("reference") / "ref.fa"
    # soft-masked lower case and 60-base lines, as real references hold
    path.write_text("".join(f">{name} test contig\n{seq[:60].lower()}\n{seq[60:]}\n"
                            for name, seq in genome.items()))
    return path


def other(base: str, shift: int = 1) -> str:
    return "ACGT"[("ACGT".index(base) + shift) % 4]


def snv(genome, chrom: str, pos: int, shift: int = 1, line: int = 0) -> Variant:
    ref = genome[chrom][pos - 1]
    return Variant(chrom, pos, ref, other(ref, shift), line)


def contig_codes(genome) -> dict[str, np.ndarray]:
    return {name: encode(seq) for name, seq in genome.items()}


def score(model, genome, variants, batch_size=4, both_strands=False):
    return score_variants(model, variants, contig_codes(genome), set(genome), Path("ref.fa"), WINDOW,
                          batch_size, both_strands, progress=False)


def vcf_line(chrom, pos, ref, alt, info=".") -> str:
    return f"{chrom}\t{pos}\t.\t{ref}\t{alt}\t.\t.\t{info}\n"


# ------------------------------------------------------------------------- MergeDNA by hand
@torch.no_grad()
def masked_marginal_by_hand(model: MergeDNA, sequence: str, centre: int, ref: str, alt: str
                            ) -> tuple[float, int]:
    """Pass 3 of MergeDNA.compute_losses written out: tokenise the REF window, mask every base of the
    variant's token, run the masked window through the four modules; (the score, bases masked)."""
    ids = encode_tensor(sequence)[None]  # [1, N]
    valid = torch.ones_like(ids, dtype=torch.bool)
    targets = model.token_targets(valid.sum(1))
    tokens = model.local_encoder(ids, targets)
    token_mask = tokens.assign[0] == tokens.assign[0, centre]  # [N]
    masked_tokens = model.local_encoder(mask_bases(ids, token_mask[None]), targets)
    masked_latent, _ = model.latent_encoder(masked_tokens)
    log_probs = model.decode(masked_latent, valid)[0, centre].log_softmax(-1)
    return float(log_probs["ACGT".index(alt)] - log_probs["ACGT".index(ref)]), int(token_mask.sum())


@torch.no_grad()
def mean_embedding_distance(model: MergeDNA, ref_window: str, alt_window: str) -> float:
    means = [model.encode(encode_tensor(w)[None])[0][0].mean(0) for w in (ref_window, alt_window)]
    return float(1 - torch.nn.functional.cosine_similarity(means[0], means[1], dim=0))


def test_masked_marginal_equals_a_hand_computation(mergedna, genome):
    chr1 = genome["chr1"]
    variants = [snv(genome, "chr1", pos, shift)
                for pos, shift in ((50, 1), (51, 2), (120, 3), (200, 1), (5, 2))]
    result = score(mergedna, genome, variants)
    assert [s.name for s in result.columns] == [MASKED_MARGINAL.name, EMBEDDING_DISTANCE.name]
    masked_sizes = []
    for variant, (marginal, distance) in zip(variants, result.scores):
        start = max(0, variant.start - FLANK)  # pos 5 is clipped: 4 bases of left flank
        window = chr1[start:variant.start + 1 + FLANK]
        centre = variant.start - start
        expected, masked = masked_marginal_by_hand(mergedna, window, centre, variant.ref, variant.alt)
        masked_sizes.append(masked)
        assert marginal == pytest.approx(expected, abs=1e-5)
        alt_window = window[:centre] + variant.alt + window[centre + 1:]
        assert distance == pytest.approx(mean_embedding_distance(mergedna, window, alt_window), abs=1e-5)
    assert max(masked_sizes) > 1, "no variant's token spans several bases: the token mask is not exercised"
    assert len({round(float(s), 6) for s in result.scores[:, 0]}) == len(variants)


def test_mergedna_scores_snvs_only_and_counts_the_rest(mergedna, genome):
    chr1 = genome["chr1"]
    variants = [snv(genome, "chr1", 60, line=7), Variant("chr1", 80, chr1[79:81], chr1[79], 8),
                Variant("chr1", 90, chr1[89:91], "AC", 9)]
    result = score(mergedna, genome, variants)
    assert [v.line for v in result.variants] == [7]
    reason = "not a single-base substitution (MergeDNA's masked marginal scores SNVs only)"
    assert result.dropped.lines(reason) == [8, 9]


# ------------------------------------------------------------------------- CARMANIA by hand
@torch.no_grad()
def log_likelihood(model: Carmania, sequence: str) -> float:
    ids = encode_tensor(sequence)[None]
    log_probs = model(ids)[0, :-1].log_softmax(-1)  # position t predicts base t + 1
    return float(log_probs.gather(1, ids[0, 1:, None]).sum())


@pytest.mark.parametrize("kind", ["snv", "deletion", "insertion", "mnv"])
def test_carmania_llr_of_the_same_reference_span(carmania, genome, kind):
    chr1, pos = genome["chr1"], 150
    ref, alt = {"snv": (chr1[149], other(chr1[149])),
                "deletion": (chr1[149:153], chr1[149]),
                "insertion": (chr1[149], chr1[149] + "GATTACA"),
                "mnv": (chr1[149:151], other(chr1[149]) + other(chr1[150], 2))}[kind]
    result = score(carmania, genome, [Variant("chr1", pos, ref, alt, 1)])
    assert [s.name for s in result.columns] == [LLR.name, EMBEDDING_DISTANCE.name]
    left, right = chr1[pos - 1 - FLANK:pos - 1], chr1[pos - 1 + len(ref):pos - 1 + len(ref) + FLANK]
    expected = log_likelihood(carmania, left + alt + right) - log_likelihood(carmania, left + ref + right)
    assert result.scores[0, 0] == pytest.approx(expected, abs=1e-4)
    assert result.scores[0, 1] > 0


# ------------------------------------------------------------------------- batches and strands
@pytest.mark.parametrize("family", ["mergedna", "carmania"])
def test_batched_equals_unbatched(family, mergedna, carmania, genome):
    model = mergedna if family == "mergedna" else carmania
    chr1 = genome["chr1"]
    variants = [snv(genome, "chr1", p, s) for p, s in ((3, 1), (40, 2), (100, 3), (298, 1), (170, 2))]
    variants.append(snv(genome, "chr2", 60, 1))
    if family == "carmania":  # windows of other lengths in the same batch
        variants += [Variant("chr1", 210, chr1[209:215], chr1[209], 0),
                     Variant("chr1", 220, chr1[219], "ACGTT", 0)]
    one = score(model, genome, variants, batch_size=1, both_strands=True).scores
    all_at_once = score(model, genome, variants, batch_size=len(variants), both_strands=True).scores
    np.testing.assert_allclose(all_at_once, one, atol=1e-5, rtol=0)
    np.testing.assert_allclose(score(model, genome, variants, batch_size=3, both_strands=True).scores, one,
                               atol=1e-5, rtol=0)


def reverse_complemented(genome: dict[str, str], variant: Variant) -> Variant:
    """The same variant on the reverse-complemented contig: REF's span ends where it started."""
    length = len(genome[variant.chrom])
    pos = length - variant.start - len(variant.ref) + 1
    return Variant(variant.chrom, pos, rc(variant.ref), rc(variant.alt), variant.line)


@pytest.mark.parametrize("family", ["mergedna", "carmania"])
def test_strand_averaging_is_symmetric_under_reverse_complement(family, mergedna, carmania, genome):
    model = mergedna if family == "mergedna" else carmania
    chr1 = genome["chr1"]
    variants = [snv(genome, "chr1", p, s) for p, s in ((10, 1), (77, 2), (150, 3), (295, 1))]
    if family == "carmania":
        variants += [Variant("chr1", 120, chr1[119:123], chr1[119], 0),
                     Variant("chr1", 130, chr1[129], "ACCA", 0)]
    flipped_genome = {name: rc(seq) for name, seq in genome.items()}
    flipped = [reverse_complemented(genome, v) for v in variants]
    assert all(flipped_genome[v.chrom][v.start:v.start + len(v.ref)] == v.ref for v in flipped)
    forward = score(model, genome, variants, both_strands=True).scores
    backward = score(model, flipped_genome, flipped, both_strands=True).scores
    np.testing.assert_allclose(backward, forward, atol=1e-5, rtol=0)
    # one strand alone differs between the two: the averaging is what makes them agree
    one_strand = score(model, genome, variants).scores[:, 0]
    assert not np.allclose(score(model, flipped_genome, flipped).scores[:, 0], one_strand, atol=1e-3)


# ------------------------------------------------------------------------- labels
def test_label_metrics_read_likelihoods_negated_and_distances_as_they_are():
    labels = [1, 1, 0, 0, None]
    scores = np.array([[-3.0, 0.9], [-2.0, 0.8], [1.0, 0.1], [0.5, 0.2], [9.0, 9.0]])  # [V, S]
    metrics = label_metrics(scores, labels, (MASKED_MARGINAL, EMBEDDING_DISTANCE))
    for name in ("masked_marginal", "embedding_distance"):
        assert metrics[name] == {"auroc": 1.0, "auprc": 1.0, "labelled": 4, "positives": 2}
    with pytest.raises(LabelMetricsError, match="both classes"):
        label_metrics(scores[:2], [1, 1], (MASKED_MARGINAL, EMBEDDING_DISTANCE))


def test_labels_from_a_table_report_auroc_and_auprc(portable, fasta, genome, tmp_path, capsys):
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(1)
    table = tmp_path / "variants.tsv"
    rows = ["#chrom\tpos\tref\talt\tdamaging\tnote\n"]
    for i, pos in enumerate(range(30, 280, 25)):
        v = snv(genome, "chr1", pos, int(rng.integers(1, 4)))
        rows.append(f"{v.chrom}\t{v.pos}\t{v.ref}\t{v.alt}\t{i % 2}\tx\n")
    table.write_text("".join(rows))
    out = tmp_path / "scores.tsv"
    assert main(["--model", str(portable["carmania"]), "--fasta", str(fasta), "--table", str(table),
                 "--out", str(out), "--labels", "damaging", "--window", str(WINDOW), "--no-progress"]) == 0
    err = capsys.readouterr().err
    written = np.loadtxt(out, skiprows=1, usecols=(4, 5))  # [V, 2]: llr, embedding_distance
    labels = np.arange(len(written)) % 2
    for name, damaging in (("llr", -written[:, 0]), ("embedding_distance", written[:, 1])):
        assert (f"{name}: AUROC {roc_auc_score(labels, damaging):.4f}  "
                f"AUPRC {average_precision_score(labels, damaging):.4f}") in err
    assert "10 labelled variants, 5 labelled 1" in err


# ------------------------------------------------------------------------- the command line
def test_cli_end_to_end_writes_the_tsv_and_the_annotated_vcf(portable, fasta, genome, tmp_path, capsys):
    from cyvcf2 import VCF

    chr1, chr2 = genome["chr1"], genome["chr2"]
    others = [b for b in "ACGT" if b != chr1[99]]
    vcf = tmp_path / "calls.vcf"
    vcf.write_text(VCF_HEADER + vcf_line("chr1", 100, chr1[99], ",".join(others), "LAB=1")
                   + vcf_line("chr1", 140, chr1[139:142], chr1[139], "LAB=0")
                   + vcf_line("chr2", 50, chr2[49], "<DEL>", "LAB=0"))
    for family, rows in (("mergedna", 3), ("carmania", 4)):
        out, out_vcf = tmp_path / f"{family}.tsv", tmp_path / f"{family}.vcf.gz"
        assert main(["--model", str(portable[family]), "--fasta", str(fasta), "--vcf", str(vcf),
                     "--out", str(out), "--out-vcf", str(out_vcf), "--window", str(WINDOW), "--both-strands",
                     "--batch-size", "2",
                     "--no-progress"]) == 0
        lines = out.read_text().splitlines()
        score_names = ["masked_marginal" if family == "mergedna" else "llr", "embedding_distance"]
        assert lines[0].split("\t") == ["chrom", "pos", "ref", "alt", *score_names]
        assert len(lines) == 1 + rows
        assert [line.split("\t")[3] for line in lines[1:4]] == others  # the multi-allelic record, split
        err = capsys.readouterr().err
        assert f"scored {rows} of 5 variants" in err
        assert f"line {HEADER_LINES + 3} ({chr2[49]}><DEL>)" in err
        records = list(VCF(str(out_vcf)))
        assert len(records) == 3  # every input record, scored or not
        from_tsv = [float(line.split("\t")[4]) for line in lines[1:4]]
        np.testing.assert_allclose(records[0].INFO.get(f"megamerge_{score_names[0]}"), from_tsv, atol=1e-5)
        assert records[2].INFO.get(f"megamerge_{score_names[0]}") is None


def test_bad_inputs_are_named_with_their_lines_and_the_rest_is_scored(portable, fasta, genome, tmp_path,
                                                                       capsys):
    chr1 = genome["chr1"]
    wrong = other(chr1[59])
    vcf = tmp_path / "calls.vcf"
    vcf.write_text(VCF_HEADER
                   + vcf_line("chr1", 100, chr1[99], other(chr1[99]))  # fine
                   + vcf_line("chr1", 60, wrong, other(wrong))  # REF disagrees
                   + vcf_line("chrZ", 5, "A", "G")  # contig not in the FASTA
                   + vcf_line("1", 7, chr1[6], other(chr1[6]))  # chr1 spelt without 'chr'
                   + vcf_line("chr1", 2, chr1[1], other(chr1[1]))  # near the contig's start
                   + vcf_line("chr1", 299, chr1[298:300], chr1[298])  # a deletion at the contig's end
                   + vcf_line("chr1", 301, "A", "C"))  # past the contig's end
    out = tmp_path / "scores.tsv"
    assert main(["--model", str(portable["carmania"]), "--fasta", str(fasta), "--vcf", str(vcf),
                 "--out", str(out),
                 "--window", str(WINDOW), "--no-progress"]) == 0
    err = capsys.readouterr().err
    line = HEADER_LINES + 1  # the first record's line
    assert f"2 REF disagrees with the FASTA: line {line + 1} (REF {wrong}, FASTA {chr1[59]})" in err
    assert f"line {line + 6} (REF A at chr1:301 ends past the contig, 300 bp)" in err
    assert f"on contig 'chrZ', which is not in {fasta}: line {line + 2}" in err
    assert (f"on contig '1', which is not in {fasta}; the FASTA has 'chr1': a naming mismatch?: "
            f"line {line + 3}") in err
    assert (f"2 scored with a window clipped at a contig end (a shorter flank on that side): line {line + 4} "
            f"(chr1:2), line {line + 5} (chr1:299)") in err
    assert "dropped 4, never scored" in err
    assert [row.split("\t")[1] for row in out.read_text().splitlines()[1:]] == ["100", "2", "299"]


def assert_nothing_written(directory: Path, before: set[str]) -> None:
    assert {p.name for p in directory.iterdir()} == before, "a failed run left a file behind"


def test_failures_write_nothing(portable, fasta, genome, tmp_path, capsys):
    chr1 = genome["chr1"]
    good = vcf_line("chr1", 100, chr1[99], other(chr1[99]))
    broken = tmp_path / "broken.vcf"
    broken.write_text(VCF_HEADER + good + "chr1\tXX\t.\tA\tC\t.\t.\t.\n")
    all_bad = tmp_path / "all_bad.vcf"
    all_bad.write_text(VCF_HEADER + vcf_line("chrZ", 5, "A", "G"))
    calls = tmp_path / "calls.vcf"
    calls.write_text(VCF_HEADER + good)
    a_file = tmp_path / "a_file"
    a_file.write_text("not a directory\n")
    before = {p.name for p in tmp_path.iterdir()}
    base = ["--model", str(portable["mergedna"]), "--fasta", str(fasta), "--window", str(WINDOW),
            "--no-progress"]
    out = str(tmp_path / "o.tsv")
    cases = [
        (["--vcf", str(broken), "--out", out],
         f"--vcf {broken} line {HEADER_LINES + 2}: not a valid VCF record"),
        (["--vcf", str(all_bad), "--out", out], "no variant could be scored, nothing written"),
        (["--vcf", str(calls), "--out", out, "--labels", "NOPE"],
         f"--labels NOPE: no INFO field 'NOPE' in the header of {calls}"),
        # the TSV is complete before the VCF's directory fails: neither may appear
        (["--vcf", str(calls), "--out", out, "--out-vcf", str(a_file / "o.vcf")], str(a_file)),
        (["--vcf", str(calls), "--out", str(calls)], f"--out {calls} is the input {calls}"),
    ]
    for extra, message in cases:
        assert main(base + extra) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
        assert_nothing_written(tmp_path, before)


def test_an_existing_out_is_replaced_only_with_overwrite_and_only_if_ours(portable, fasta, genome, tmp_path,
                                                                           capsys):
    chr1 = genome["chr1"]
    calls = tmp_path / "calls.vcf"
    calls.write_text(VCF_HEADER + vcf_line("chr1", 100, chr1[99], other(chr1[99])))
    out, foreign = tmp_path / "scores.tsv", tmp_path / "notes.tsv"
    foreign.write_text("my notes\n")

    def run(out: Path, *extra: str) -> int:
        return main(["--model", str(portable["mergedna"]), "--fasta", str(fasta), "--vcf", str(calls),
                     "--out", str(out), "--window", str(WINDOW), "--no-progress", *extra])

    assert run(out) == 0
    first = out.read_text()
    assert run(out) == 2
    assert f"--out {out}: exists; choose a new path, or pass --overwrite" in capsys.readouterr().err
    assert run(out, "--overwrite") == 0 and out.read_text() == first
    assert run(foreign, "--overwrite") == 2
    assert "not an earlier output of score_variants.py" in capsys.readouterr().err
    assert foreign.read_text() == "my notes\n"


def test_table_input_errors_name_the_line_and_column(portable, fasta, tmp_path, capsys):
    cases = {"chrom\tposition\tref\talt\tlab\nchr1\t5\tA\tC\t1\n": "no column 'pos' in the header",
             "chrom\tpos\tref\talt\tlab\nchr1\t5\tA\tC\t1\nchr1\tfive\tA\tC\t0\n":
                 "line 3: pos 'five' is not a 1-based position",
             "chrom\tpos\tref\talt\tlab\nchr1\t5\tA\tC\t1\nchr1\t5\tA\tC\n":
                 "line 3: 4 cells, the header has 5",
             "chrom\tpos\tref\talt\tlab\nchr1\t5\tA\tC\tmaybe\n":
                 "line 2, column lab: label 'maybe' is not 0/1"}
    for i, (text, message) in enumerate(cases.items()):
        table = tmp_path / f"t{i}.tsv"
        table.write_text(text)
        assert main(["--model", str(portable["carmania"]), "--fasta", str(fasta), "--table", str(table),
                     "--out", str(tmp_path / f"o{i}.tsv"), "--labels", "lab", "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert f"{table}" in err and message in err, err
        assert not (tmp_path / f"o{i}.tsv").exists()
