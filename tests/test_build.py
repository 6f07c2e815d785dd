"""The build: generation steps, imports, faults, kill-and-restart, the key never written, the offline SmolLM2 build.

The LLM behind most tests is tests/fake_openai_server.py reached through the real ``openai`` SDK;
it answers paraphrase prompts with the maintainers' hand-written ZsRE paraphrases (which pass the
llama2 gates) and topic prompts with "Science". Every expected count is derived in a comment from
the records, the scripted faults and the steps' rules.
"""

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from editprobe.dataset_builder.build import (BuildSettings, ConfigPlan, Generators, LLMSpec, build, format_report,
                                             load_recipe)
from editprobe.dataset_builder.generation import (answer_levels, answer_levels_text, check_newquestion, clean_statement,
                                                  question_sha1)
from editprobe.dataset_builder.hf_dataset import load_records
from editprobe.dataset_builder.llm import ChatResult
from editprobe.dataset_builder.llm_cache import LLMCache
from editprobe.dataset_builder.sources import convert_file
from editprobe.formats import CONFIG_SCHEMES, CONFIGS, base_config
from tests.fake_openai_server import FakeOpenAIServer

REPO = Path(__file__).resolve().parent.parent
RELEASE = REPO / "dataset_builder" / "release"
ZSRE = "knowedit/zsre_test.json"
KEY = "sk-editprobe-test-5f3a9c1e7d2b-never-written"
# `editprobe build`, registered on the top-level group if editprobe/cli.py does not do it yet
CLI = [sys.executable, "-c", "from editprobe.cli import main; from editprobe.dataset_builder.cli import build; "
                             "main.commands.setdefault('build', build); main()", "build"]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One intra-op thread while this module runs: on 2 shared cores, two threads spin against any other
    busy process (measured: the offline SmolLM2 build 160 s with two threads vs 20 s with one)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def zsre_lines():
    return {json.loads(line)["id"]: json.loads(line)
            for line in (RELEASE / "zsre.paraphrases.jsonl").read_text().splitlines() if line.strip()}


@pytest.fixture(scope="module")
def zsre_questions(data_dir):
    return {r["question"]: r["id"] for r in convert_file(data_dir / ZSRE).records[:40]}


class Responder:
    """Paraphrase prompts -> the hand-written paraphrases of the question quoted in the prompt; topic
    prompts -> "Science"; newquestion prompts -> "What is <subject> known for?". ``garbage_once`` /
    ``bad_topic_once``: the first answer for that record id is unusable (not JSON / not a category)."""

    def __init__(self, lines, questions, garbage_once=(), bad_topic_once=()):
        self.lines, self.questions = lines, questions
        self.garbage_once, self.bad_topic_once = set(garbage_once), set(bad_topic_once)

    def __call__(self, body):
        user = body["messages"][-1]["content"]
        if "six levels" in user:
            question = re.search(r"^Question: (.+)$", user, re.MULTILINE)[1]
            rid = self.questions[question]
            if rid in self.garbage_once:
                self.garbage_once.discard(rid)
                return "Sorry, I can only answer in prose today."
            return json.dumps({str(p["level"]): p["rephrase"] for p in self.lines[rid]["paraphrases"]})
        if "Which one category" in user:
            question = re.search(r"^Question: (.+)$", user, re.MULTILINE)[1]
            if self.questions.get(question) in self.bad_topic_once:
                self.bad_topic_once.discard(self.questions[question])
                return '{"topic": "Astrology"}'
            return '{"topic": "Science"}'
        subject = re.search(r"Write one question about (.+?) that this text answers", user)[1]
        return json.dumps({"newquestion": f"What is {subject} known for?"})


def _settings(srv, tmp_path, **llm):
    llm = {"model": "fake-model", "base_url": srv.base_url, "timeout": 2.0, "retry_base_delay": 0.01, "workers": 2,
           **llm}
    return BuildSettings(cache_dir=tmp_path / "cache", show_progress=False, llm=LLMSpec(**llm))


# --------------------------------------------------------------------------- small pure functions

def test_answer_parsers():
    assert answer_levels({"1": "a", "level_2": "b", "7": "x"}) == {1: "a", 2: "b"}
    assert answer_levels({"paraphrases": ["a", "b", "c"]}) == {1: "a", 2: "b", 3: "c"}
    assert answer_levels([{"level": 2, "rephrase": "b"}]) == {2: "b"}
    assert answer_levels_text('1. "first"\nLevel 2: second\n2. ignored\nnoise') == {1: "first", 2: "second"}


def test_statement_cleaning_and_newquestion_check():
    # the cut-off tail goes; the repeated sentence (case aside) goes
    assert clean_statement("X is a town.  It is old. it is old. It was founded in") == "X is a town. It is old."
    assert clean_statement("no sentence end at all") == "no sentence end at all"
    assert check_newquestion("Where is X?", "X") is None
    assert check_newquestion("Where is it?", "X") == "subject missing"
    assert check_newquestion("Tell me about X.", "X") == "not a question"


# --------------------------------------------------------------------------- faults through the real SDK

def test_build_survives_every_fault_and_the_rerun_is_all_cache(data_dir, tmp_path, embedder, zsre_lines, zsre_questions):
    ids = [f"knowedit_zsre-{i:05d}" for i in range(6)]
    responder = Responder(zsre_lines, zsre_questions, garbage_once=[ids[2]], bad_topic_once=[ids[4]])
    plan = ConfigPlan("zsre", data_dir / ZSRE, limit=6, topics="both")
    with FakeOpenAIServer(responder, api_key=KEY, stall_seconds=3.0) as srv:
        srv.script("429", "500", "stall", "malformed")  # the first four requests each fail once
        settings = _settings(srv, tmp_path)
        report = build([plan], settings, tmp_path / "out", api_key=KEY, embedder=embedder)
        c = report["configs"]["zsre"]
        assert (c["records_in"], c["kept"], c["excluded"]) == (6, 6, 0)
        assert [r["id"] for r in load_records(tmp_path / "out", "zsre", cache_dir=str(tmp_path / "hf"))] == ids
        # calls: 6 paraphrase + 1 regeneration (the prose answer) + 6 topic + 1 re-ask (Astrology) = 14;
        # each of the 4 scripted faults costs one retry, so the server saw 18 requests
        g = report["llm"]["generator"]
        assert (g["calls"], g["cache_hits"], g["failures"], g["retries"]) == (14, 0, 0, 4)
        assert srv.total_received == 18
        # the prose answer's six levels were each counted as failed candidates once, then passed
        level1 = {k: v for k, v in c["gates"]["1"].items() if k != "passed_distribution"}
        assert level1 == {"passed": 6, "failed": 1, "reasons": {"missing from the answer": 1}}
        # distributions cover the six that passed: the released lines' level 1 are near-copies
        assert c["gates"]["1"]["passed_distribution"]["levenshtein"]["p90"] < 0.10
        assert c["paraphrase_attempts"] == {"1": 5, "2": 1}
        assert c["topics"]["llm_invalid"] == 0 and c["topics"]["agreement"]["compared"] == 6
        first = (tmp_path / "out" / "zsre" / "test.jsonl").read_bytes()

        rerun = build([plan], settings, tmp_path / "out2", api_key=KEY, embedder=embedder)
        g2 = rerun["llm"]["generator"]
        assert (g2["calls"], g2["cache_hits"]) == (0, 14) and srv.total_received == 18
        assert (tmp_path / "out2" / "zsre" / "test.jsonl").read_bytes() == first
    assert "LLM: 0 calls, 14 cache hits" in format_report(rerun)


def test_a_failed_call_keeps_the_record_listed_not_lost(data_dir, tmp_path, embedder, zsre_lines, zsre_questions):
    with FakeOpenAIServer(Responder(zsre_lines, zsre_questions), api_key=KEY) as srv:
        srv.script(*["500"] * 3)  # max_retries=2: the first call fails for good
        settings = dataclasses.replace(_settings(srv, tmp_path, max_retries=2, workers=1), max_attempts=1)
        report = build([ConfigPlan("zsre", data_dir / ZSRE, limit=2, topics="embedding")], settings,
                       tmp_path / "out", api_key=KEY, embedder=embedder)
    c = report["configs"]["zsre"]
    assert (c["kept"], c["excluded"]) == (1, 1)
    assert c["excluded_records"][0]["kind"] == "paraphrases failed the gates"
    assert "LLM call failed" in c["excluded_records"][0]["reason"] and report["llm"]["generator"]["failures"] == 1


# --------------------------------------------------------------------------- kill -9 and restart (subprocess CLI)

def _run_cli(args, logs: Path, env, wait=True):
    """``editprobe build ARGS`` in a subprocess, stdout/stderr to ``logs``.out/.err."""
    with open(logs.with_suffix(".out"), "w") as out, open(logs.with_suffix(".err"), "w") as err:
        proc = subprocess.Popen(CLI + args, stdout=out, stderr=err, env=env, cwd=REPO)
    if wait:
        proc.wait(timeout=240)
    return proc


def test_killed_build_restarts_without_repeating_a_call_and_never_writes_the_key(
        data_dir, tmp_path, zsre_lines, zsre_questions):
    out, cache, logs = tmp_path / "out", tmp_path / "cache", tmp_path / "logs"
    logs.mkdir()
    env = {**os.environ, "EDITPROBE_TEST_KEY": KEY, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    with FakeOpenAIServer(Responder(zsre_lines, zsre_questions), api_key=KEY) as srv:
        args = ["--source", str(data_dir / ZSRE), "--config", "zsre", "--limit", "8", "--out", str(out),
                "--llm-cache", str(cache), "--cache-dir", str(tmp_path / "root"), "--backend", "openai",
                "--llm-model", "fake-model",
                "--base-url", srv.base_url, "--api-key-env", "EDITPROBE_TEST_KEY", "--workers", "2",
                "--topics", "llm", "--timeout", "30", "--retry-base-delay", "0.01", "--quiet"]
        srv.hold_after(5)  # answer 5 requests, then hold every later one
        proc = _run_cli(args, logs / "run1", env, wait=False)
        deadline = time.time() + 180
        while not (srv.total_answered == 5 and len(LLMCache(cache)) == 5 and srv.total_received > 5):
            assert proc.poll() is None and time.time() < deadline, "build ended or stalled before the kill point"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        srv.release()
        assert len(LLMCache(cache)) == 5 and not (out / "build_report.json").exists()

        assert _run_cli(args, logs / "run2", env).returncode == 0, (logs / "run2.err").read_text()
        # 8 paraphrase + 8 topic requests, each answered exactly once over both runs
        assert len(srv.answered) == 16 and set(srv.answered.values()) == {1}
        report = json.loads((out / "build_report.json").read_text())
        assert report["configs"]["zsre"]["kept"] == 8
        assert (report["llm"]["generator"]["calls"], report["llm"]["generator"]["cache_hits"]) == (11, 5)

        assert "LLM: 11 calls, 5 cache hits" in (logs / "run2.out").read_text()
        assert report["settings"]["llm"]["api_key_env"] == "EDITPROBE_TEST_KEY"

    for folder in (out, cache, logs):
        for path in folder.rglob("*"):
            if path.is_file():
                assert KEY.encode() not in path.read_bytes(), f"the API key leaked into {path}"


# --------------------------------------------------------------------------- imports and recipes

def test_import_matches_by_id_and_sha_and_counts_topic_overrides(data_dir, tmp_path, embedder, zsre_lines):
    ids = [f"knowedit_zsre-{i:05d}" for i in range(5)]
    lines = [{k: v for k, v in zsre_lines[i].items() if k != "topic"} for i in ids]  # no hand-checked topics...
    lines[1]["question_sha1"] = "000000000000"                          # fingerprint of another text
    lines[3]["topic"] = "Personal Finance"      # ...but this one, for "Who is listed as Wang Jipeng father?"
    swapped = [dict(p) for p in lines[4]["paraphrases"]]
    swapped[0]["rephrase"] = swapped[5]["rephrase"]                      # level 1 = the level-6 text
    lines[4]["paraphrases"] = swapped
    del lines[2]                                                         # no line for record 2
    path = tmp_path / "para.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))

    report = build([ConfigPlan("zsre", data_dir / ZSRE, limit=5, paraphrases_from=path, topics="embedding")],
                   BuildSettings(cache_dir=None, show_progress=False), tmp_path / "out", embedder=embedder)
    c = report["configs"]["zsre"]
    assert (c["kept"], c["excluded"]) == (2, 3)
    assert {r["id"]: r["kind"] for r in c["excluded_records"]} == {
        ids[1]: "question_sha1 mismatch", ids[2]: "no line in the paraphrase file",
        ids[4]: "imported paraphrases failed the gates"}
    # gated: records 0, 3, 4; record 4 fails level 1 (far from the original) and level 6 (same text as level 1)
    assert c["gates"]["1"]["passed"] == 2 and c["gates"]["1"]["failed"] == 1
    assert c["gates"]["6"]["passed"] == 2 and c["gates"]["6"]["failed"] == 1
    assert {k: v for k, v in c["gates"]["3"].items() if k != "passed_distribution"} == {
        "passed": 3, "failed": 0, "reasons": {}}
    # a family question is no finance question: the hand-checked label overrides the classifier
    assert (c["topics"]["hand_checked"], c["topics"]["overrides"]) == (1, 1)
    records = {r["id"]: r for r in load_records(tmp_path / "out", "zsre", cache_dir=str(tmp_path / "hf"))}
    assert records[ids[3]]["topic"] == "Personal Finance"
    assert records[ids[3]]["provenance"]["generator"]["topic"].startswith("assigned: ")
    assert records[ids[0]]["generated_questions"] == zsre_lines[ids[0]]["paraphrases"]
    assert report["llm"] == {}  # nothing needed an LLM


class StubTarget:
    """A target model that states one fixed sentence about any subject (the Backend protocol)."""

    name, model = "stub", "stub-target"

    def parameters(self, request):
        return {"max_tokens": request.max_tokens}

    def prepare(self, request):
        return request

    def generate(self, requests, on_result, progress):
        for i, r in enumerate(requests):
            subject = re.search(r"What do you know about (.+)\? Answer", r.messages[-1][1])[1]
            on_result(i, ChatResult(f"{subject} is a person who appears in a unit test.", 9, 11))
            progress(1)


def _known_for(subject):
    return [f"what is {subject} known for?", f"What is {subject} best known for?", f"{subject} is known for what?",
            f"For what is {subject} chiefly remembered?", f"I'd like to know what {subject} is famous for.",
            f"Someone mentioned {subject} the other day; what is this person known for?"]


def test_wiki_steps_subject_knowledge_newquestion_and_sha_check(data_dir, tmp_path, embedder, zsre_lines, zsre_questions):
    records = convert_file(data_dir / "knowedit/wiki_recent_train.json").records[:3]
    s0, s1 = records[0]["subject"], records[1]["subject"]
    q0, q1 = f"What is {s0} known for?", f"What is {s1} known for?"
    lines = [
        # hand-written newquestion, hand-checked topic
        {"id": records[0]["id"], "newquestion": q0, "question_sha1": question_sha1(q0), "topic": "Entertainment",
         "paraphrases": [{"level": i + 1, "rephrase": t} for i, t in enumerate(_known_for(s0))]},
        # no newquestion: the LLM writes one, and it must be the text these paraphrases were written for
        {"id": records[1]["id"], "question_sha1": question_sha1(q1),
         "paraphrases": [{"level": i + 1, "rephrase": t} for i, t in enumerate(_known_for(s1))]},
        {"id": records[2]["id"], "question_sha1": question_sha1("Some other question?"),
         "paraphrases": [{"level": i + 1, "rephrase": f"{records[2]['subject']} {i}?"} for i in range(6)]},
    ]
    path = tmp_path / "wiki.jsonl"
    path.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))
    with FakeOpenAIServer(Responder(zsre_lines, zsre_questions), api_key=KEY) as srv:
        settings = _settings(srv, tmp_path)
        generators = Generators(settings, KEY, backends={"stub-target": StubTarget()})
        plan = ConfigPlan("wiki_recent", data_dir / "knowedit/wiki_recent_train.json", limit=3,
                          paraphrases_from=path, paraphrases_by="test maintainers", topics="embedding",
                          target_model="stub-target")
        report = build([plan], settings, tmp_path / "out", generators=generators, embedder=embedder)
    c = report["configs"]["wiki_recent"]
    assert (c["kept"], c["excluded"]) == (2, 1)
    assert c["excluded_records"][0]["id"] == records[2]["id"]
    assert c["excluded_records"][0]["kind"] == "question_sha1 mismatch"
    # one subject_knowledge statement per record; newquestions written for records 1 and 2 only
    assert report["llm"]["target stub-target"]["calls"] == 3 and report["llm"]["generator"]["calls"] == 2
    kept = {r["id"]: r for r in load_records(tmp_path / "out", "wiki_recent", cache_dir=str(tmp_path / "hf"))}
    r0, r1 = kept[records[0]["id"]], kept[records[1]["id"]]
    assert r0["subject_knowledge"] == f"{s0} is a person who appears in a unit test."
    assert (r0["newquestion"], r1["newquestion"]) == (q0, q1)
    assert r0["generated_questions"][3]["rephrase"] == f"For what is {s0} chiefly remembered?"
    assert r0["topic"] == "Entertainment"
    assert r0["provenance"]["generator"] == {"paraphrases": "test maintainers", "newquestion": "test maintainers",
                                             "subject_knowledge": "stub:stub-target (greedy)",
                                             "topic": "assigned: test maintainers"}
    assert r1["provenance"]["generator"]["newquestion"] == "openai:fake-model"


SOURCE_SIZES = {"zsre": 1000, "wiki_recent": 450, "wiki_counterfact": 1200}


def test_release_recipe_covers_every_source_record_in_both_schemes(data_dir):
    import yaml

    spec = yaml.safe_load((RELEASE / "recipe.yaml").read_text())
    assert {c: v["paraphrases"] for c, v in spec["configs"].items()} == {
        c: f"{c}.paraphrases.jsonl" for c in CONFIGS}
    assert all("limit" not in v for v in spec["configs"].values())  # every record of each source is read
    assert {v["paraphrases_by"] for v in spec["configs"].values()} == {
        "Claude (Anthropic), written directly as maintainer (no API)"}
    plans = load_recipe(RELEASE / "recipe.yaml", data_dir).plans
    assert {p.config: p.scheme_name("llama2") for p in plans} == {c: CONFIG_SCHEMES[c] for c in CONFIGS}


def test_release_recipe_builds_offline_from_the_committed_cache(data_dir, tmp_path, embedder):
    """The released set, all six configs: every source record read, >= 95% of each kept, every line of the six
    paraphrase files matching its record and passing its gates (the rest left out with the writer's reason),
    subject_knowledge from the committed cache (no model call), the same newquestion and topic in both
    schemes, and a card with its statistics; it loads with load_dataset, Features intact."""
    from datasets import ClassLabel, load_dataset

    recipe = load_recipe(RELEASE / "recipe.yaml", data_dir)
    cache = tmp_path / "cache"
    shutil.copytree(RELEASE / "llm_cache", cache)  # a miss would be generated here, never into the repository
    settings = dataclasses.replace(recipe.settings, cache_dir=cache, show_progress=False)
    started = time.time()
    report = build(recipe.plans, settings, tmp_path / "out", embedder=embedder)
    seconds = time.time() - started
    for config, c in report["configs"].items():
        assert c["records_in"] == SOURCE_SIZES[base_config(config)]
        lines = [json.loads(x) for x in (RELEASE / f"{config}.paraphrases.jsonl").read_text(encoding="utf-8")
                 .splitlines()]
        assert len(lines) == c["records_in"]  # every source record has a line: paraphrases or the writer's reason
        written = [x for x in lines if "left_out" not in x]
        assert c["kept"] == len(written) >= 0.95 * c["records_in"], (config, c["excluded_by_reason"])
        assert set(c["excluded_by_reason"]) <= {"left out by the paraphrase writer"}, c["excluded_by_reason"]
        assert all(r["reason"] for r in c["excluded_records"])
        assert c["scheme"] == CONFIG_SCHEMES[config]
        assert len(c["excluded_records"]) == c["excluded"]
    target = report["llm"]["target smollm2-135m-instruct"]
    assert target["calls"] == 0 and target["cache_hits"] > 0 and "generator" not in report["llm"]
    assert len(LLMCache(cache)) == len(LLMCache(RELEASE / "llm_cache"))
    card = (tmp_path / "out" / "README.md").read_text()
    assert "$" not in card.split("---", 2)[2].replace("$builder", "")  # every placeholder filled
    assert (tmp_path / "out" / "paraphrase_stats.png").stat().st_size > 10_000
    # the rendered card the README links is this build's (`make release-card` regenerates it)
    assert card == (REPO / "docs" / "perturbation_set" / "README.md").read_text(encoding="utf-8")
    for config in CONFIGS:
        assert f'load_dataset("<this folder or repo>", "{config}", split="test")' in card
        ds = load_dataset(str(tmp_path / "out"), config, split="test", cache_dir=str(tmp_path / "hf"))
        assert len(ds) == report["configs"][config]["kept"]
        assert isinstance(ds.features["topic"], ClassLabel)
        assert [q["level"] for q in ds[0]["generated_questions"]] == [1, 2, 3, 4, 5, 6]
        assert ds[0]["provenance"]["scheme"] == CONFIG_SCHEMES[config]
    for base in ("wiki_recent", "wiki_counterfact"):
        a = {r["id"]: r for r in load_records(tmp_path / "out", base, cache_dir=str(tmp_path / "hf"))}
        b = {r["id"]: r for r in load_records(tmp_path / "out", f"{base}_llama3", cache_dir=str(tmp_path / "hf"))}
        shared = set(a) & set(b)
        assert len(shared) >= 0.95 * SOURCE_SIZES[base]
        assert all(a[i]["newquestion"] == b[i]["newquestion"] and a[i]["subject_knowledge"] ==
                   b[i]["subject_knowledge"] and a[i]["topic"] == b[i]["topic"] for i in shared)
    print(f"\n  release build: {report['totals']['kept']} records kept of {report['totals']['records_in']} "
          f"in {seconds:.0f} s")


def test_recipe_with_a_missing_paraphrase_file_fails_clearly(data_dir, tmp_path):
    from editprobe.dataset_builder.cli import build as build_command

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("scheme: llama2\nconfigs:\n  zsre:\n    source: knowedit/zsre_test.json\n    limit: 3\n"
                      "    paraphrases: zsre.paraphrases.jsonl\n")
    result = CliRunner().invoke(build_command, ["--recipe", str(recipe), "--out", str(tmp_path / "out"),
                                                "--data-dir", str(data_dir)])
    assert result.exit_code == 1
    assert result.output.strip() == (f"Error: recipe {recipe}: config zsre: paraphrase file "
                                     f"{tmp_path / 'zsre.paraphrases.jsonl'} not found")
    assert not (tmp_path / "out").exists()
    shutil.copy(RELEASE / "zsre.paraphrases.jsonl", tmp_path)
    assert [p.config for p in load_recipe(recipe, data_dir).plans] == ["zsre"]


# --------------------------------------------------------------------------- offline end to end on SmolLM2

def test_offline_build_with_smollm2_reports_honestly(data_dir, tmp_path, embedder):
    """SmolLM2-135M writes poor paraphrases: assert the report's structure and bookkeeping, not quality."""
    cache = tmp_path / "cache"
    shutil.copytree(RELEASE / "llm_cache", cache)  # subject_knowledge of these records is already there
    plans = [ConfigPlan("zsre", data_dir / ZSRE, limit=2, topics="both"),
             ConfigPlan("wiki_recent", data_dir / "knowedit/wiki_recent_train.json", limit=2, topics="both"),
             ConfigPlan("wiki_counterfact", data_dir / "knowedit/wiki_counterfact_train.json", limit=2,
                        topics="both")]
    settings = BuildSettings(max_attempts=1, cache_dir=cache, show_progress=False,
                             llm=LLMSpec(backend="transformers", max_tokens=64))
    report = build(plans, settings, tmp_path / "out", embedder=embedder)
    assert json.loads((tmp_path / "out" / "build_report.json").read_text()) == report
    assert (tmp_path / "out" / "README.md").exists()
    for config, c in report["configs"].items():
        assert c["records_in"] == 2 and c["kept"] + c["excluded"] == 2
        assert len(c["excluded_records"]) == c["excluded"]
        assert all(r["kind"] and r["reason"] for r in c["excluded_records"])
        assert sorted(c["gates"]) == ["1", "2", "3", "4", "5", "6"]
        assert all(set(g) == {"passed", "failed", "reasons", "passed_distribution"} for g in c["gates"].values())
        if config != "zsre":
            assert "smollm2" in c["target_model"]
    assert report["totals"]["records_in"] == 6
    assert report["llm"]["generator"]["model"] == "transformers:smollm2-135m-instruct"
    assert report["llm"]["generator"]["calls"] >= 2  # at least the two zsre paraphrase requests
    target = report["llm"]["target smollm2-135m-instruct"]
    assert target["calls"] + target["cache_hits"] == 4  # one subject_knowledge request per wiki record
    for config in report["written"]:
        assert all(len(r["generated_questions"]) == 6
                   for r in load_records(tmp_path / "out", config, cache_dir=str(tmp_path / "hf")))

    again = build(plans, settings, tmp_path / "out2", embedder=embedder)
    assert again["llm"]["generator"]["calls"] == 0 and again["llm"]["target smollm2-135m-instruct"]["calls"] == 0
    assert again["totals"] == report["totals"]


# --------------------------------------------------------------------------- checking a paraphrase file

def test_check_paraphrases_names_each_failing_line_and_exits_1(data_dir, tmp_path):
    from editprobe.cli import main

    lines = [json.loads(x) for x in (RELEASE / "zsre.paraphrases.jsonl").read_text().splitlines()[:4]]
    good = tmp_path / "zsre.good.jsonl"
    good.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8")
    res = CliRunner().invoke(main, ["check-paraphrases", str(good), "--data-dir", str(data_dir)])
    assert res.exit_code == 0, res.output
    assert res.output.strip().endswith("4/4 lines pass the llama2 gates (0 problem(s))")

    bad = [dict(x) for x in lines]
    bad[1] = {**bad[1], "question_sha1": "000000000000"}
    bad[2] = {**bad[2], "paraphrases": [dict(p) for p in bad[2]["paraphrases"]], "topic": "Astrology"}
    bad[2]["paraphrases"][1]["rephrase"] = bad[2]["paraphrases"][0]["rephrase"]  # L2 = L1
    bad.append({**bad[0], "id": "knowedit_zsre-99999"})
    path = tmp_path / "zsre_llama3.mine.jsonl"  # the name says: config zsre_llama3, scheme llama3
    path.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in bad), encoding="utf-8")
    res = CliRunner().invoke(main, ["check-paraphrases", str(path), "--data-dir", str(data_dir)])
    assert res.exit_code == 1
    out = res.output
    assert f"{lines[1]['id']} line: question_sha1 should be {question_sha1(convert_file(data_dir / ZSRE).records[1]['question'])}" in out
    assert f"{lines[2]['id']} line: unknown topic 'Astrology'" in out
    level2 = [x for x in out.splitlines() if x.startswith(f"{lines[2]['id']} L2: ")]
    assert len(level2) == 1 and "same text as level 1" in level2[0]
    assert "1 id(s) not in" in out and "knowedit_zsre-99999" in out
    assert "lines pass the llama3 gates" in out
    res = CliRunner().invoke(main, ["check-paraphrases", str(tmp_path / "zsre.good.jsonl"), "--config", "nope"])
    assert res.exit_code == 2


def test_recipe_build_of_chosen_configs(data_dir, tmp_path):
    from editprobe.dataset_builder.cli import build as build_command

    out = tmp_path / "out"
    res = CliRunner().invoke(build_command, ["--recipe", "release", "--configs", "zsre,zsre_llama3", "--limit", "3",
                                             "--out", str(out), "--data-dir", str(data_dir), "--quiet",
                                             "--llm-cache", str(tmp_path / "llm")])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "build_report.json").read_text())
    assert list(report["configs"]) == ["zsre", "zsre_llama3"] and report["totals"]["kept"] == 6
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["zsre", "zsre_llama3"]
    res = CliRunner().invoke(build_command, ["--recipe", "release", "--configs", "zsre,nope", "--out", str(out),
                                             "--data-dir", str(data_dir)])
    assert res.exit_code == 2 and "the recipe has no config nope" in res.output
