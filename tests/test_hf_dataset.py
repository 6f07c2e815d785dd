"""The HF dataset writer: what it writes loads back with datasets.load_dataset, offline, unchanged."""

import copy
import json

import pytest
from datasets import ClassLabel, List, load_dataset

from editprobe.formats import CONFIGS, base_config
from editprobe.dataset_builder.hf_dataset import load_records, write_dataset
from editprobe.dataset_builder.sources import convert_file
from editprobe.formats import FormatError, load_topics

FILES = {"zsre": "knowedit/zsre_test.json", "wiki_recent": "knowedit/wiki_recent_train.json",
         "wiki_counterfact": "knowedit/wiki_counterfact_train.json"}


def _released(data_dir, config, n=4):
    records = convert_file(data_dir / FILES[base_config(config)]).records[:n]
    for i, r in enumerate(records):
        r["generated_questions"] = [{"level": lvl, "rephrase": f"{r['question']} (v{lvl})"} for lvl in range(1, 7)]
        r["topic"] = load_topics()[(i * 4) % 15]
        r["provenance"]["topic_zero_shot"] = load_topics()[i % 15] if i % 2 else None
        if base_config(config) != "zsre":
            r["subject_knowledge"] = f"{r['subject']} is something."
            r["newquestion"] = f"What is {r['subject']}?"
    return records


@pytest.fixture(scope="module")
def written(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("hf")
    data = {cfg: {"test": _released(data_dir, cfg)} for cfg in CONFIGS}
    write_dataset(out, data, "# test card\n")
    return out, data


@pytest.mark.parametrize("config", CONFIGS)
def test_round_trip_offline(written, config, tmp_path):
    out, data = written
    assert load_records(out, config, "test", cache_dir=str(tmp_path)) == data[config]["test"]


def test_features_are_declared(written, tmp_path):
    out, _ = written
    ds = load_dataset(str(out), "wiki_recent", split="test", cache_dir=str(tmp_path))
    assert isinstance(ds.features["topic"], ClassLabel) and ds.features["topic"].names == list(load_topics())
    gq = ds.features["generated_questions"]
    assert isinstance(gq, List) and set(gq.feature) == {"level", "rephrase"}  # list of structs
    assert ds[0]["generated_questions"][5]["level"] == 6
    assert ds[0]["answer"] is None  # WikiData_recent has no ground truth


def test_card_declares_configs_and_license(written):
    out, _ = written
    card = (out / "README.md").read_text()
    assert card.startswith("---\n") and "license: mit" in card
    for cfg in CONFIGS:
        assert f"config_name: {cfg}" in card and f"path: {cfg}/test.jsonl" in card
    assert "class_label" in card and "Environment & Sustainability" in card


def test_writer_refuses_invalid_records_and_writes_nothing(data_dir, tmp_path):
    good = _released(data_dir, "zsre", 3)
    bad = copy.deepcopy(good)
    bad[1]["generated_questions"] = bad[1]["generated_questions"][:5]
    with pytest.raises(FormatError) as info:
        write_dataset(tmp_path, {"zsre": {"test": bad}}, "card")
    assert "zsre/test.jsonl: record 1 (id 'knowedit_zsre-00001'): field 'generated_questions'" in str(info.value)
    assert not (tmp_path / "zsre").exists()


def test_jsonl_is_the_released_json(written):
    out, data = written
    first = json.loads((out / "zsre" / "test.jsonl").read_text().splitlines()[0])
    assert first == data["zsre"]["test"][0] and isinstance(first["topic"], str)
