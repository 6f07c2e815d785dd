"""Source adapters on the real files in the shared data folder, and on corrupted copies of them."""

import json

import pytest
from click.testing import CliRunner

from editprobe.dataset_builder.sources import cloze_to_question, convert_file, detect_format, iter_raw_records
from editprobe.cli import main
from editprobe.formats import schema_errors
from tests.conftest import SOURCE_FILES


@pytest.mark.parametrize("rel", sorted(SOURCE_FILES))
def test_every_real_record_converts(data_dir, rel, capsys):
    fmt, n = SOURCE_FILES[rel]
    result = convert_file(data_dir / rel)
    with capsys.disabled():
        print(f"\n  {result.summary()}")
    assert result.format == fmt
    assert [str(e) for e in result.errors] == []
    assert len(result.records) == n
    assert len({r["id"] for r in result.records}) == n
    for record in result.records[:50]:
        assert schema_errors(record, "source_record") == []


def test_knowedit_zsre_fields(data_dir):
    # Values read off record 0 of zsre_test.json by hand.
    r = convert_file(data_dir / "knowedit/zsre_test.json").records[0]
    assert r["id"] == "knowedit_zsre-00000"
    assert r["question"] == r["prompt"] == "Which family does Epaspidoceras belong to?"
    assert (r["answer"], r["answer_aliases"], r["alt"]) == ("Aspidoceratidae", ["Aspidoceratidae"], "Noctuidae")
    assert r["rephrase"] == "What family are Epaspidoceras?"
    assert [p["kind"] for p in r["locality"]] == ["Relation_Specificity"] * 2
    assert r["locality"][0] == {"prompt": "The taxon rank of Epaspidoceras is", "answers": ["genus"],
                                "kind": "Relation_Specificity"}
    assert r["portability"] == [{"prompt": "What is the common name for the family Epaspidoceras belongs to?",
                                 "answers": ["Owlet moths"], "kind": "Reasoning"}]
    assert r["provenance"]["source_file"] == "zsre_test.json" and r["provenance"]["index"] == 0


def test_zsre_targets_with_leading_space_are_stripped(data_dir):
    raw = json.loads((data_dir / "knowedit/zsre_test.json").read_text())
    records = convert_file(data_dir / "knowedit/zsre_test.json").records
    spaced = [i for i, x in enumerate(raw) if x["target_new"].startswith(" ")]
    assert spaced, "the real file has targets with a leading space"
    for i in spaced:
        assert records[i]["alt"] == raw[i]["target_new"].strip()


def test_wiki_recent_alias_groups_are_flattened(data_dir):
    r = convert_file(data_dir / "knowedit/wiki_recent_train.json").records[0]
    assert r["answer"] is None and r["answer_aliases"] == []
    assert r["question"] == "What is the gender of Ingrīda Amantova?"
    assert r["prompt"] == "The gender of Ingrīda Amantova is"
    citizenship = r["locality"][1]
    assert citizenship["prompt"] == "The name of the country of citizenship of Ingrīda Amantova is"
    assert citizenship["answers"][:2] == ["Soviet Union", "USSR"] and len(citizenship["answers"]) == 13
    assert r["portability"] == []


def test_wiki_counterfact_empty_ground_truth_means_none(data_dir):
    records = convert_file(data_dir / "knowedit/wiki_counterfact_train.json").records
    assert records[0]["answer"] == "France" and records[0]["alt"] == "Franche-Comté"
    assert records[629]["answer"] is None and records[629]["question"] == "What does Gisenius, Johannes follow?"


def test_mend_zsre_fields(data_dir):
    r = convert_file(data_dir / "samples/zsre_mend_format.sample.json").records[0]
    assert r["alt"] == "2006" and r["answer"] == "1998"
    assert r["locality"] == [{"prompt": "what is the name of the last episode of spongebob",
                              "answers": ["The String"], "kind": "nq"}]
    assert r["portability"][0]["answers"] == ["Athletics"]


def test_easyedit_counterfact_fields(data_dir):
    r = convert_file(data_dir / "samples/counterfact_easyedit_flat.sample.json").records[0]
    assert r["question"] == "What is the mother tongue of Danielle Darrieux?"
    assert r["locality"][0]["prompt"] == "Michel Rocard is a native speaker of"
    assert r["rephrase"] == "Where Danielle Darrieux is from, people speak the language of"


def test_rome_counterfact_layout_fields(data_dir):
    # Record 0 of the sample, read by hand: requested_rewrite {"prompt": "{} originates from", "subject":
    # "Spike Hughes", target_new "Philadelphia", target_true "London"}, 2 paraphrase, 10 neighborhood and
    # 10 attribute prompts, a portability question whose answer is "Cheesesteaks".
    r = convert_file(data_dir / "samples/counterfact_rome_layout.sample.json").records[0]
    assert r["prompt"] == "Spike Hughes originates from"
    assert r["question"] == "Spike Hughes originates from what?"
    assert (r["answer"], r["alt"], r["subject"]) == ("London", "Philadelphia", "Spike Hughes")
    assert r["rephrase"] == ("Incumbent Mayor Jim Suttle sought a second term in office. "
                             "Spike Hughes is native to")
    kinds = [p["kind"] for p in r["locality"]]
    assert kinds == ["neighborhood"] * 10 + ["attribute"] * 10
    assert r["locality"][0] == {"prompt": "Max Mosley originates from", "answers": ["London"], "kind": "neighborhood"}
    assert r["locality"][10] == {"prompt": "Mike Dennis originates from", "answers": ["Philadelphia"],
                                 "kind": "attribute"}
    assert r["portability"] == [{"prompt": "What famous food is associated with the city where Spike Hughes "
                                           "originates from?", "answers": ["Cheesesteaks"], "kind": "New_Question"}]


def test_a_rome_template_without_its_placeholder_is_named(data_dir, tmp_path):
    raw = json.loads((data_dir / "samples/counterfact_rome_layout.sample.json").read_text())
    raw[1]["requested_rewrite"]["prompt"] = "Spike Hughes originates from"
    path = tmp_path / "cf.json"
    path.write_text(json.dumps(raw), encoding="utf-8")
    result = convert_file(path)
    assert len(result.records) == 19
    assert [e.index for e in result.errors] == [1]
    assert "field 'requested_rewrite.prompt': expected exactly one '{}'" in str(result.errors[0])


def test_zsre_portability_variants(data_dir):
    # Records 0 of the two EasyEdit samples, read by hand.
    r = convert_file(data_dir / "samples/zsre_subject_replace.sample.json").records[0]
    assert (r["question"], r["answer"], r["alt"]) == ("Which was the constellation for NGC 3953?", "Ursa Major",
                                                      "Triangulum")
    assert r["locality"] == []
    assert r["portability"] == [{"prompt": "What is the constellation of UGC 6870?", "answers": ["Triangulum"],
                                 "kind": "subject_replace"}]
    r = convert_file(data_dir / "samples/zsre_inverse_relation.sample.json").records[0]
    assert (r["subject"], r["answer"], r["alt"]) == ("Claire Clairmont", "Mary Shelley", "Marian Clairmont")
    assert r["portability"] == [{"prompt": "Who is Marian Clairmont's sister?", "answers": ["Claire Clairmont"],
                                 "kind": "inverse_relation"}]


@pytest.mark.parametrize("cloze, question", [
    ("The gender of Igugu is", "What is the gender of Igugu?"),
    ("The names of the cast members of Rush Hour are", "What are the names of the cast members of Rush Hour?"),
    ("2041 BC follows", "What does 2041 BC follow?"),
    ("Lange, Reinerus is followed by", "What is Lange, Reinerus followed by?"),
    ("Apple A5 was created by", "Apple A5 was created by what?"),
    ("Who wrote it?", "Who wrote it?"),
])
def test_cloze_to_question(cloze, question):
    assert cloze_to_question(cloze) == question


# --------------------------------------------------------------------------- corrupted copies

def _missing_key(fmt: str) -> str:
    """The path of the edit target the corrupted copy deletes, as the error names it."""
    if fmt == "rome_counterfact":
        return "requested_rewrite.target_new"
    return "alt" if fmt in ("mend_zsre", "zsre_subject_replace", "zsre_inverse_relation") else "target_new"


def _subject_key(fmt: str) -> str:
    return "requested_rewrite.subject" if fmt == "rome_counterfact" else "subject"


def _corrupt_copy(data_dir, rel, tmp_path, jsonl=False):
    """A copy of a real file with record 2 missing its target, record 4's subject a number, record 6 not JSON."""
    fmt, _ = SOURCE_FILES[rel]
    raw = json.loads((data_dir / rel).read_text())
    *parents, target = _missing_key(fmt).split(".")
    holder = raw[2]
    for key in parents:
        holder = holder[key]
    del holder[target]
    *parents, subject = _subject_key(fmt).split(".")
    holder = raw[4]
    for key in parents:
        holder = holder[key]
    holder[subject] = 123
    if jsonl:
        lines = [json.dumps(x, ensure_ascii=False) for x in raw]
        lines[6] = lines[6][:-1]  # drop the closing brace
        text = "\n".join(lines) + "\n"
        path = tmp_path / (rel.replace("/", "_") + "l")
    else:
        chunks = [json.dumps(x, ensure_ascii=False, indent=2) for x in raw]
        chunks[6] = chunks[6].replace('"subject":', '"subject"', 1)  # a missing colon
        text = "[\n" + ",\n".join("\n".join("  " + l for l in c.splitlines()) for c in chunks) + "\n]\n"
        path = tmp_path / rel.replace("/", "_")
    path.write_text(text, encoding="utf-8")
    return path, fmt, len(raw)


@pytest.mark.parametrize("jsonl", [False, True], ids=["json-array", "jsonl"])
@pytest.mark.parametrize("rel", sorted(SOURCE_FILES))
def test_corrupted_copy_reports_each_bad_record_and_keeps_the_rest(data_dir, tmp_path, rel, jsonl):
    path, fmt, n = _corrupt_copy(data_dir, rel, tmp_path, jsonl)
    result = convert_file(path)
    assert result.format == fmt
    assert len(result.records) == n - 3
    errors = {e.index: str(e) for e in result.errors}
    assert sorted(errors) == [2, 4, 6]
    assert f"field '{_missing_key(fmt)}': missing" in errors[2]
    assert f"field '{_subject_key(fmt)}': expected a string, got int" in errors[4]
    assert "not valid JSON" in errors[6]
    assert all(e.startswith(f"{path}: record ") for e in errors.values())
    # The good records around the bad ones are intact and in order.
    assert [r["provenance"]["index"] for r in result.records[:4]] == [0, 1, 3, 5]


def test_cli_convert_prints_one_line_per_bad_record(data_dir, tmp_path):
    path, _, n = _corrupt_copy(data_dir, "knowedit/zsre_test.json", tmp_path)
    out = tmp_path / "records.jsonl"
    res = CliRunner().invoke(main, ["convert", str(path), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert res.stderr.count("error: ") == 3
    assert f"{n - 3} converted, 3 rejected, {n} read" in res.stdout
    assert sum(1 for _ in out.open()) == n - 3


def test_cli_convert_explicit_format_and_unknown_format(data_dir, tmp_path):
    out = tmp_path / "r.jsonl"
    src = data_dir / "samples/counterfact_easyedit_flat.sample.json"
    res = CliRunner().invoke(main, ["convert", str(src), "--out", str(out), "--format", "easyedit_counterfact"])
    assert res.exit_code == 0 and "20 converted" in res.stdout
    res = CliRunner().invoke(main, ["convert", str(src), "--out", str(out), "--format", "nope"])
    assert res.exit_code != 0 and "unknown source format 'nope'; known: rome_counterfact, zsre_subject_replace" in res.output


def test_forced_wrong_format_rejects_with_field_names(data_dir):
    # ZsRE records read as MEND/ROME ZsRE lack the MEND fields: every record says which.
    result = convert_file(data_dir / "samples/counterfact_easyedit_flat.sample.json", "mend_zsre")
    assert not result.records and len(result.errors) == 20
    assert "field 'answers': missing" in str(result.errors[0])


def test_detection_uses_record_shapes(data_dir):
    raws = [r for _, r in iter_raw_records(data_dir / "knowedit/wiki_counterfact_train.json")]
    assert detect_format(raws[:5]) == "knowedit_wiki_counterfact"
