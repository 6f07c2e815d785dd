"""The perturbation-record schema: what it accepts and how it names what it rejects."""

import copy

import pytest

from editprobe.dataset_builder.sources import convert_file
from editprobe.formats import FormatError, load_schema, load_topics, schema_errors, validate

TOPICS_IN_ORDER = ["History", "Sports", "Entertainment", "Health & Wellness", "Technology", "Travel & Culture",
                   "Food & Cuisine", "Personal Finance", "Science", "Literature & Arts", "Philosophy & Psychology",
                   "Education & Academia", "Law & Politics", "Environment & Sustainability", "General Knowledge"]


@pytest.fixture(scope="module")
def released(data_dir):
    record = convert_file(data_dir / "knowedit/zsre_test.json").records[0]
    record["generated_questions"] = [{"level": i, "rephrase": f"paraphrase {i}"} for i in range(1, 7)]
    record["topic"] = "Science"
    return record


def test_topics_file_is_the_fifteen_in_order():
    assert list(load_topics()) == TOPICS_IN_ORDER
    assert load_schema("perturbation_record")["$defs"]["topic"]["enum"][:-1] == TOPICS_IN_ORDER


def test_released_record_is_valid(released):
    assert schema_errors(released, "perturbation_record") == []


@pytest.mark.parametrize("mutate, field", [
    (lambda r: r["generated_questions"].pop(), "generated_questions"),
    (lambda r: r["generated_questions"][2].update(level=2), "generated_questions[2].level"),
    (lambda r: r["generated_questions"][0].update(rephrase=""), "generated_questions[0].rephrase"),
    (lambda r: r.update(topic="Cooking"), "topic"),
    (lambda r: r.update(answer=7), "answer"),
    (lambda r: r["locality"][0].update(answers=[]), "locality[0].answers"),
    (lambda r: r.update(extra="x"), "<root>"),
])
def test_violations_name_the_field(released, mutate, field):
    bad = copy.deepcopy(released)
    mutate(bad)
    with pytest.raises(FormatError) as info:
        validate(bad, "perturbation_record", "out.jsonl: record 3")
    assert str(info.value).startswith(f"out.jsonl: record 3: field '{field}'")


def test_source_record_schema_has_no_generated_fields(released):
    source = {k: v for k, v in released.items() if k not in ("generated_questions", "topic")}
    assert schema_errors(source, "source_record") == []
    assert schema_errors(source, "perturbation_record")  # the released form requires them


def test_every_shipped_task_validates_and_names_a_known_config():
    from editprobe.benchmark.tasks import load_task, task_files
    from editprobe.formats import CONFIGS

    names = [f.name.removesuffix(".yaml") for f in task_files()]
    assert {"zsre_llama3", "wiki_recent_llama3", "wiki_counterfact_llama3"} <= set(names)
    for name in names:
        assert load_task(name).dataset_config in CONFIGS
