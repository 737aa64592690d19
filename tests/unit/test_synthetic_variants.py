"""data_prep/synthetic.py --variants: SNVs with ground truth. REF is the FASTA's base; a motif-breaking
variant (MOTIF=1) changes a consensus base of a planted motif instance, a background one (MOTIF=0) lies
in background away from every planted region; the draw follows --seed alone; cyvcf2 and
tools/score_variants.py's reader take the file as it is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_prep.synthetic import VARIANTS_SUFFIX, main
from data_prep.synthetic_variants import BACKGROUND_MARGIN
from megamerge.variant_scoring.variants import read_vcf
from tests.data_helpers import read_fasta_records

SPECIES, LENGTH, RECORDS, VARIANTS = 2, 60_000, 2, 40
PLANTED = ("motif", "tandem_repeat", "low_complexity", "gap")


def write_genomes(out: Path, seed: int = 3, variants: int = VARIANTS, compress: bool = True) -> Path:
    assert main(["--out", str(out), "--species", str(SPECIES), "--length", str(LENGTH), "--records",
                 str(RECORDS), "--variants", str(variants), "--seed", str(seed), "--no-progress",
                 *([] if compress else ["--no-gzip"])]) == 0
    return out


@pytest.fixture(scope="module")
def genomes(tmp_path_factory) -> Path:
    return write_genomes(tmp_path_factory.mktemp("synthetic_variants"))


def vcf_rows(path: Path) -> list[dict]:
    rows = []
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            continue
        chrom, pos, _, ref, alt, _, _, info = line.split("\t")
        fields = dict(item.split("=") for item in info.split(";"))
        rows.append({"chrom": chrom, "pos": int(pos), "ref": ref, "alt": alt, "label": int(fields["MOTIF"]),
                     "region": fields["REGION"]})
    return rows


def detailed_regions(path: Path) -> dict[str, list[tuple[int, int, str, str]]]:
    """record -> (start, end, type, detail) from synthetic.py's detailed BED."""
    regions: dict[str, list] = {}
    for line in path.read_text().splitlines()[1:]:
        record, start, end, kind, detail = line.split("\t")
        regions.setdefault(record, []).append((int(start), int(end), kind, detail))
    return regions


def test_ref_is_the_fasta_base_and_alt_another_one(genomes: Path):
    for species in json.loads((genomes / "synthetic.json").read_text())["species"]:
        fasta = read_fasta_records(genomes / f"{species}.fa.gz")
        rows = vcf_rows(genomes / f"{species}{VARIANTS_SUFFIX}")
        assert rows
        for row in rows:
            assert row["ref"] == chr(fasta[row["chrom"]][row["pos"] - 1]).upper(), row
            assert row["alt"] in "ACGT" and row["alt"] != row["ref"], row
        assert rows == sorted(rows, key=lambda r: (int(r["chrom"].rsplit("chr", 1)[1]), r["pos"]))


def test_labels_follow_the_planted_regions(genomes: Path):
    truth = json.loads((genomes / "synthetic.json").read_text())
    for species, info in truth["species"].items():
        regions = detailed_regions(genomes / f"{species}.bed")
        rows = vcf_rows(genomes / f"{species}{VARIANTS_SUFFIX}")
        for row in rows:
            offset = row["pos"] - 1
            start, _, kind, detail = next(r for r in regions[row["chrom"]] if r[0] <= offset < r[1])
            if row["label"] == 1:  # inside a motif instance, on a base that agrees with the motif
                assert kind == "motif" and row["region"] == detail, row
                assert info["motifs"][int(detail.removeprefix("motif"))][offset - start] == row["ref"], row
            else:  # background, and no planted region within the margin on either side
                assert kind == "background" and row["region"] == "background", row
                near = [r for r in regions[row["chrom"]]
                        if r[0] < offset + BACKGROUND_MARGIN and r[1] > offset - BACKGROUND_MARGIN]
                assert all(r[2] not in PLANTED for r in near), (row, near)
        labels = [row["label"] for row in rows]
        assert labels.count(1) == labels.count(0) == VARIANTS // 2
        assert info["variants"] == {"motif_breaking": VARIANTS // 2, "background": VARIANTS // 2}


def test_the_draw_follows_the_seed_and_leaves_the_genome_alone(genomes: Path, tmp_path: Path):
    again = write_genomes(tmp_path / "again", compress=False)
    other = write_genomes(tmp_path / "other", seed=4)
    without = tmp_path / "without"
    assert main(["--out", str(without), "--species", str(SPECIES), "--length", str(LENGTH), "--records",
                 str(RECORDS), "--seed", "3", "--no-progress", "--no-gzip"]) == 0
    for species in ("synth_sp00", "synth_sp01"):
        name = species + VARIANTS_SUFFIX
        vcf = (genomes / name).read_text()
        # the VCF names its FASTA; otherwise the same bytes however the FASTA is stored
        assert (again / name).read_text() == vcf.replace(".fa.gz", ".fa")
        assert vcf_rows(other / name) != vcf_rows(genomes / name)
        assert (without / f"{species}.fa").read_bytes() == (again / f"{species}.fa").read_bytes()
        assert not (without / f"{species}{VARIANTS_SUFFIX}").exists()


def test_cyvcf2_reads_it_with_contigs_and_labels(genomes: Path):
    from cyvcf2 import VCF

    path = genomes / f"synth_sp00{VARIANTS_SUFFIX}"
    reader = VCF(str(path))
    try:
        assert reader.seqnames == [f"synth_sp00_chr{r + 1}" for r in range(RECORDS)]
        assert reader.get_header_type("MOTIF")["Type"] == "Integer"
        records = [(v.CHROM, v.POS, v.REF, v.ALT, v.INFO["MOTIF"]) for v in reader]
    finally:
        reader.close()
    expected = vcf_rows(path)
    assert records == [(r["chrom"], r["pos"], r["ref"], [r["alt"]], r["label"]) for r in expected]
    variants = read_vcf(path, "MOTIF")  # the reader of tools/score_variants.py --labels MOTIF
    assert [v.label for v in variants] == [r["label"] for r in expected]


def test_more_variants_than_the_genome_holds_is_refused_and_nothing_is_written(tmp_path: Path, capsys):
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "out"), "--species", "2", "--length", "3000", "--records", "1",
              "--variants", "4000", "--no-progress"])
    assert "--variants 4000" in capsys.readouterr().err
    assert not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("flags", [["--variants", "1"], ["--variants", "-2"],
                                   ["--variants", "10", "--task", "motif"]])
def test_bad_variant_flags_are_refused(tmp_path: Path, flags: list[str], capsys):
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--no-progress", *flags])
    assert "--variants" in capsys.readouterr().err
