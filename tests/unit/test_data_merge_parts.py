"""data_prep/merge_parts.py: a corpus prepared in two parts (prepare.py --part K/2) and merged equals
the corpus of one prepare.py run (same store files, samples, accounting), and bad parts are refused
with the part named."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from data_prep import merge_parts
from data_prep.corpus_parts import files_of_part, parse_part, part_of_each_file
from tests.data_helpers import assert_same_corpus, file_contents, run_prepare

SETTINGS = ["--seq-len", "64", "--min-len", "16", "--valid-frac", "0.3", "--samples-per-shard", "5",
            "--mix-shards", "2"]


def _record(rng: np.random.Generator, length: int) -> str:
    bases = "".join(rng.choice(list("ACGTN"), length, p=[0.24, 0.24, 0.24, 0.24, 0.04]))
    cut = length // 3  # a soft-masked stretch
    return bases[:cut] + bases[cut : 2 * cut].lower() + bases[2 * cut :]


def _fasta(records: list[tuple[str, int]], rng: np.random.Generator) -> str:
    return "".join(f">{name} description\n{_record(rng, length)}\n" for name, length in records)


@pytest.fixture(scope="module")
def corpus_inputs(tmp_path_factory) -> tuple[Path, Path]:
    """Four files of three species (gamma.fa is mapped to alpha): empty records, a duplicate id across
    files, short tails, N runs and soft-masking; and a file prepare.py skips."""
    root = tmp_path_factory.mktemp("merge-parts")
    genomes = root / "genomes"
    genomes.mkdir()
    rng = np.random.default_rng(0)
    (genomes / "alpha.fa").write_text(_fasta([("a1", 900), ("a2", 0), ("shared", 500), ("a3", 700)], rng))
    (genomes / "beta.fa").write_text(_fasta([("shared", 600), ("b1", 700), ("b2", 30)], rng))
    (genomes / "delta.fa.gz").write_bytes(gzip.compress(_fasta([("d1", 400), ("d2", 0)], rng).encode()))
    (genomes / "gamma.fa").write_text(_fasta([("g1", 800), ("g2", 90)], rng))
    (genomes / "README.txt").write_text("not a genome\n")
    species_map = root / "species.tsv"
    species_map.write_text("gamma.fa\talpha\n")
    return genomes, species_map


@pytest.fixture(scope="module")
def prepared(corpus_inputs, tmp_path_factory):
    """(one-process corpus, part 1, part 2, merged corpus)."""
    genomes, species_map = corpus_inputs
    root = tmp_path_factory.mktemp("prepared")
    common = ["--input", str(genomes), "--species-map", str(species_map), *SETTINGS]
    run_prepare(*common, "--out", root / "whole")
    for k in (1, 2):
        run_prepare(*common, "--out", root / f"part{k}", "--part", f"{k}/2")
    assert merge_parts.main(["--parts", str(root / "part2"), str(root / "part1"),
                             "--out", str(root / "merged"), "--no-progress"]) == 0
    return root / "whole", root / "part1", root / "part2", root / "merged"


def _manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


def test_the_fixture_spreads_species_and_duplicates_over_both_parts(prepared):
    _, part1, part2, _ = prepared
    groups = {k: _manifest(p)["part"]["groups"] for k, p in ((1, part1), (2, part2))}
    names = {f["group"]: f["file_name"] for p in (part1, part2) for f in _manifest(p)["files"]}
    by_file = {names[g]: k for k, gs in groups.items() for g in gs}
    assert by_file["alpha.fa"] != by_file["gamma.fa"]  # species alpha is in both parts
    assert by_file["alpha.fa"] != by_file["beta.fa"]  # so is the duplicate id 'shared'
    assert sorted(groups[1] + groups[2]) == ["000000", "000001", "000002", "000003"]


def test_two_parts_merged_equal_one_run(prepared):
    whole, _, _, merged = prepared
    assert_same_corpus(whole, merged)
    one, two = _manifest(whole), _manifest(merged)
    # 'shared' is in both parts
    assert one["totals"]["duplicate_ids"] == 1 and one["totals"]["empty_records"] == 2
    assert one["skipped_files"] and one["splits"]["train"]["shards"] > 2 and one["splits"]["valid"]["samples"]
    assert [p["part"] for p in two["parts"]] == ["1/2", "2/2"] and set(two["timing_seconds"]["parts"]) == {
        "1/2", "2/2"}


def test_merge_leaves_the_parts_as_they_were_and_replaces_only_with_overwrite(prepared, tmp_path, capsys):
    _, part1, part2, _ = prepared
    before = {p: file_contents(p) for p in (part1, part2)}
    out = tmp_path / "corpus"
    parts = ["--parts", str(part1), str(part2), "--no-progress"]
    assert merge_parts.main([*parts, "--out", str(out)]) == 0
    assert {p: file_contents(p) for p in (part1, part2)} == before
    assert merge_parts.main([*parts, "--out", str(out)]) == 1
    assert "use --overwrite" in capsys.readouterr().err
    assert merge_parts.main([*parts, "--out", str(out), "--overwrite"]) == 0
    (out / "notes.txt").write_text("mine")  # not something prepare.py or the merge wrote: never replaced
    assert merge_parts.main([*parts, "--out", str(out), "--overwrite"]) == 1
    assert "notes.txt" in capsys.readouterr().err and (out / "notes.txt").exists()
    assert merge_parts.main([*parts, "--out", str(part1 / "inner")]) == 1
    assert "lies inside the input" in capsys.readouterr().err


def _refusal(capsys, *argv) -> str:
    assert merge_parts.main([*map(str, argv), "--no-progress"]) == 1
    return capsys.readouterr().err


def test_refuses_missing_repeated_or_foreign_parts(prepared, tmp_path, capsys):
    whole, part1, part2, _ = prepared
    out = tmp_path / "out"
    assert "part 2/2 missing" in _refusal(capsys, "--parts", part1, "--out", out)
    assert "are both part 1/2" in _refusal(capsys, "--parts", part1, part1, part2, "--out", out)
    assert "a whole corpus, not a part" in _refusal(capsys, "--parts", part1, whole, "--out", out)
    (tmp_path / "empty").mkdir()
    assert "not a finished part" in _refusal(capsys, "--parts", part1, tmp_path / "empty", "--out", out)
    assert not out.exists() and not list(tmp_path.glob(".out.partial-*"))


def test_refuses_parts_prepared_differently(corpus_inputs, prepared, tmp_path, capsys):
    genomes, species_map = corpus_inputs
    _, part1, _, _ = prepared
    other = tmp_path / "part2-seq-len"
    settings = [s if s != "64" else "128" for s in SETTINGS]
    run_prepare("--input", genomes, "--species-map", species_map, *settings, "--out", other, "--part", "2/2")
    error = _refusal(capsys, "--parts", part1, other, "--out", tmp_path / "out")
    assert f"{other} (part 2/2) was prepared with --seq-len 128" in error and "64" in error
    # A file added to the input directory between the parts' runs.
    grown = tmp_path / "genomes"
    shutil.copytree(genomes, grown)
    early, late = tmp_path / "part1-early", tmp_path / "part2-late"
    run_prepare("--input", grown, "--species-map", species_map, *SETTINGS, "--out", early, "--part", "1/2")
    (grown / "epsilon.fa").write_text(">e1\nACGT\n")
    run_prepare("--input", grown, "--species-map", species_map, *SETTINGS, "--out", late, "--part", "2/2")
    error = _refusal(capsys, "--parts", early, late, "--out", tmp_path / "out")
    assert f"{late} (part 2/2) found other input files than {early} (part 1/2)" in error


def test_refuses_an_input_replaced_after_its_part_read_it(corpus_inputs, tmp_path, capsys):
    genomes, species_map = corpus_inputs
    copied = tmp_path / "genomes"
    shutil.copytree(genomes, copied)
    parts = [tmp_path / "part1", tmp_path / "part2"]
    for k, part in enumerate(parts, 1):
        run_prepare("--input", copied, "--species-map", species_map, *SETTINGS, "--out", part,
                    "--part", f"{k}/2")
    replaced = Path(_manifest(parts[0])["files"][0]["source_file"])  # read by part 1, which is not rerun
    replaced.write_text(replaced.read_text() + ">late\nACGT\n")
    error = _refusal(capsys, "--parts", *parts, "--out", tmp_path / "out")
    assert (f"input file {replaced} is" in error and "when part 1/2" in error
            and "prepare that part again" in error)
    edited = Path(_manifest(parts[1])["files"][0]["source_file"])  # read by part 2: a same-size edit
    edited_text = edited.read_text()
    replaced.write_text(replaced.read_text()[: -len(">late\nACGT\n")])  # part 1's file as it read it
    edited.write_text(edited_text[:-2] + ("A" if edited_text[-2] != "A" else "C") + "\n")
    error = _refusal(capsys, "--parts", *parts, "--out", tmp_path / "out")
    assert f"input file {edited} is not the file part 2/2" in error and "--input-check size" in error
    # --input-check size compares sizes only: the edit goes through
    assert merge_parts.main(["--parts", *map(str, parts), "--out", str(tmp_path / "sized"),
                             "--input-check", "size", "--no-progress"]) == 0
    edited.unlink()  # inputs no longer where they were (merged elsewhere): not checked
    replaced.unlink()
    assert merge_parts.main(["--parts", *map(str, parts), "--out", str(tmp_path / "out"),
                             "--no-progress"]) == 0


def test_a_relative_input_is_checked_where_its_part_ran(corpus_inputs, tmp_path, capsys, monkeypatch):
    genomes, species_map = corpus_inputs
    ran_in, merged_from = tmp_path / "ran_in", tmp_path / "elsewhere"
    shutil.copytree(genomes, ran_in / "genomes")
    merged_from.mkdir()
    monkeypatch.chdir(ran_in)
    for k in (1, 2):
        run_prepare("--input", "genomes", "--species-map", species_map, *SETTINGS,
                    "--out", tmp_path / f"part{k}", "--part", f"{k}/2")
    parts = [tmp_path / "part1", tmp_path / "part2"]
    relative = _manifest(parts[0])["files"][0]["source_file"]
    assert not Path(relative).is_absolute()
    edited = ran_in / relative
    edited.write_text(edited.read_text() + ">late\nACGT\n")
    monkeypatch.chdir(merged_from)  # where `relative` names nothing
    error = _refusal(capsys, "--parts", *parts, "--out", tmp_path / "out")
    assert f"input file {edited} is" in error and "when part 1/2" in error


def test_refuses_a_part_with_a_damaged_shard_or_store(prepared, tmp_path, capsys):
    _, part1, part2, _ = prepared
    damaged = tmp_path / "part2"
    shutil.copytree(part2, damaged)
    shard = damaged / _manifest(damaged)["shards"][0]["path"]
    shard.write_bytes(shard.read_bytes()[:-512])
    error = _refusal(capsys, "--parts", part1, damaged, "--out", tmp_path / "out")
    assert str(shard) in error and "(part 2/2)" in error and "prepare that part again" in error
    shard.unlink()
    assert "missing" in _refusal(capsys, "--parts", part1, damaged, "--out", tmp_path / "out")
    shutil.rmtree(damaged / "genomes.zarr")
    assert "part 2/2" in _refusal(capsys, "--parts", part1, damaged, "--out", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_parts_are_balanced_by_size_and_cover_every_file_once():
    sizes = [5, 100, 7, 60, 40, 1, 30]
    owner = part_of_each_file(sizes, 3)
    assert sorted(i for k in (1, 2, 3) for i in files_of_part(sizes, k, 3)) == list(range(len(sizes)))
    loads = [sum(s for s, o in zip(sizes, owner) if o == k) for k in (1, 2, 3)]
    assert max(loads) - min(loads) <= max(sizes) and loads[0] == 100  # the largest file alone in part 1
    assert all(files_of_part([1] * 3, k, 3) == [k - 1] for k in (1, 2, 3))  # N files, N parts: one each
    assert files_of_part([4, 2], 3, 3) == []  # more parts than files: an empty part
    assert parse_part(" 2/5") == (2, 5)
    for bad in ("0/2", "3/2", "2", "a/b"):
        with pytest.raises(Exception, match="K/N|between 1 and N"):
            parse_part(bad)


def test_prepare_refuses_a_part_of_a_re_cut_or_a_malformed_part(corpus_inputs, tmp_path, capsys):
    from data_prep import prepare

    genomes, _ = corpus_inputs
    with pytest.raises(SystemExit):
        prepare.parse_args(["--from-store", str(tmp_path), "--out", str(tmp_path / "o"), "--part", "1/2"])
    assert "--part splits the FASTA inputs of --input" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        prepare.parse_args(["--input", str(genomes), "--out", str(tmp_path / "o"), "--part", "3/2"])
    assert "part 3/2: K must be between 1 and N" in capsys.readouterr().err
