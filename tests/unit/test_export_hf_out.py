"""tools/export_hf.py never writes over what it did not write (issue 25, item 3): an --out that is,
contains or lies inside an input, or any non-empty directory, is refused with every input left byte
for byte; --overwrite replaces only an earlier export of its own, whole and at the end."""

from __future__ import annotations

import pytest

from megamerge.hf_export.export import export_to_hf
from megamerge.portable import load_portable
from tests.unit.finetune_tasks import micro_mergedna
from tests.unit.test_export_hf import finetuned_run
from tests.unit.test_fault_prepare import tree
from tools import export_hf


@pytest.fixture(scope="module")
def portable(tmp_path_factory):
    return micro_mergedna(tmp_path_factory.mktemp("export_out") / "portable")


def refused(capsys, *argv) -> str:
    assert export_hf.main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("export_hf: "), err
    return err


@pytest.mark.parametrize(("where", "relation"),
                         [("itself", "is"), ("inside", "lies inside"), ("parent", "contains")])
def test_out_overlapping_the_model_is_refused_and_the_model_kept(portable, capsys, where, relation):
    before = tree(portable.parent)
    out = {"itself": portable, "inside": portable / "hf", "parent": portable.parent}[where]
    for extra in ([], ["--overwrite"]):
        message = refused(capsys, "--model", portable, "--out", out, *extra)
        assert f"--out {out} {relation} the input {portable}" in message
    assert tree(portable.parent) == before
    load_portable(portable)  # still loads


def test_a_foreign_directory_is_refused_with_or_without_overwrite(portable, tmp_path, capsys):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert "exists and is not empty (it holds notes.txt); choose a new directory\n" in refused(
        capsys, "--model", portable, "--out", foreign)
    assert "not an earlier output of tools/export_hf.py (it holds notes.txt)" in refused(
        capsys, "--model", portable, "--out", foreign, "--overwrite")
    assert (foreign / "notes.txt").read_text() == "keep me" and len(list(foreign.iterdir())) == 1


def test_overwrite_replaces_an_earlier_export_whole(portable, tmp_path, capsys):
    """A LoRA export's adapter does not survive a base export over it; without --overwrite the
    earlier export is refused with the hint, and a failed export leaves it as it was."""
    seed_dir, _ = finetuned_run(tmp_path / "lora", portable)
    out = tmp_path / "hf"
    assert export_hf.main(["--finetuned", str(seed_dir), "--out", str(out)]) == 0
    assert (out / "lora_adapter").is_dir()
    assert "or pass --overwrite to replace this earlier output" in refused(capsys, "--model", portable,
                                                                           "--out", out)
    assert export_hf.main(["--model", str(portable), "--out", str(out), "--overwrite"]) == 0
    assert not (out / "lora_adapter").exists()
    assert tree(out) == tree(export_to_hf(portable, tmp_path / "fresh"))  # exactly a fresh export
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    before = tree(out)
    assert export_hf.main(["--model", str(broken), "--out", str(out), "--overwrite"]) == 2
    assert tree(out) == before
    # no partial directory left
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_from_hf_writes_only_a_new_directory(portable, tmp_path, capsys):
    hf = export_to_hf(portable, tmp_path / "hf")
    before = tree(hf)
    assert "--overwrite replaces an earlier Hugging Face export" in refused(
        capsys, "--from-hf", hf, "--out", portable, "--overwrite")
    assert "exists and is not empty" in refused(capsys, "--from-hf", hf, "--out", portable)
    assert f"--out {hf / 'back'} lies inside the input {hf}" in refused(capsys, "--from-hf", hf,
                                                                        "--out", hf / "back")
    assert tree(hf) == before
    assert export_hf.main(["--from-hf", str(hf), "--out", str(tmp_path / "back")]) == 0
