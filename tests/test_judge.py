"""`editprobe judge` and `editprobe calibrate`: the rubric parser, the OpenAI-compatible client against a local fake
server (cache, resume, retries, the key never on disk), the annotators' CSV round trip, agreement statistics and
the correlations, with expected values worked out by hand in the comments."""

import csv
import http.server
import json
import threading

import pytest
from click.testing import CliRunner

from editprobe.benchmark import calibrate as C
from editprobe.benchmark import judge as J
from editprobe.cli import main

# A run folder written by hand for these tests: the judge reads only ids, U and the free answers. The texts are
# placeholders, not dataset records.


def _record(i: int) -> dict:
    return {"id": f"r{i}", "prompt": f"query S1 of record {i}", "answer": f"old{i}", "alt": f"new{i}",
            "locality": [{"prompt": f"query S2 of record {i}", "answers": [f"loc{i}a"]},
                         {"prompt": f"query S3 of record {i}", "answers": [f"loc{i}b"]}]}


RECORDS = {f"r{i}": _record(i) for i in range(4)}


def write_run(folder, u_pairs, editor="rome"):
    """Records r0, r1, ...: U (pre, post) from ``u_pairs``; the answers state each reference but the post-edit
    S3 one."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, (u_pre, u_post) in enumerate(u_pairs):
        pre = [f"It is old{i}.", f"loc{i}a", f"loc{i}b"]
        post = [f"It is new{i}.", f"loc{i}a", "something else"]
        lines.append({"id": f"r{i}", "kind": "record", "status": "ok",
                      "pre": {"U": u_pre, "free_answers": [{"slot": s, "answer": a} for s, a in zip(J.SLOTS, pre)]},
                      "post": {"U": u_post, "free_answers": [{"slot": s, "answer": a} for s, a in zip(J.SLOTS, post)]}})
    lines.append({"id": "bad", "kind": "record", "status": "failed", "error": "x"})
    (folder / "samples.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (folder / "results.json").write_text(json.dumps({"provenance": {"editor": {"name": editor, "preset": None}}}))
    return folder


@pytest.fixture
def records(monkeypatch):
    """The hand-written records stand in for the run's dataset (``run_records``) in the CLI tests."""
    monkeypatch.setattr(J, "run_records", lambda run_dir, dataset_path=None: RECORDS)
    return RECORDS


# --------------------------------------------------------------------------- rubric replies

@pytest.mark.parametrize("reply, score", [('{"score": 4, "reason": "late error"}', 4),
                                          ('Sure. {"score": 0, "reason": "garbled"} done', 0),
                                          ("5", 5), ("Score: 3 - wrong at the start", 3), ('{"score": 2.0}', 2)])
def test_rubric_scores_are_read_from_json_or_a_leading_integer(reply, score):
    assert J.parse_score(reply) == score


@pytest.mark.parametrize("reply", ['{"score": 7}', "I would say 4", "55", '{"score": "high"}', ""])
def test_replies_without_a_rubric_score_are_refused(reply):
    with pytest.raises(J.JudgeError, match="no rubric score"):
        J.parse_score(reply)


# --------------------------------------------------------------------------- agreement and correlation, by hand

def test_weighted_kappa_by_hand():
    assert J.weighted_kappa([0, 1, 2, 5], [0, 1, 2, 5]) == pytest.approx(1.0)
    # O = 0.5*1 + 0.5*1 = 1; marginals (0.5 at 0 and 5) both ways: E = 2 * 0.25 * 1 = 0.5; kappa = 1 - 1/0.5
    assert J.weighted_kappa([0, 5], [5, 0]) == pytest.approx(-1.0)
    # O = 0.25 * 1/25; pa = (.5, .5), pb = (.25, .75): E = (1/25)(.5*.75 + .5*.25) = .02; kappa = 1 - .01/.02
    assert J.weighted_kappa([0, 0, 1, 1], [0, 1, 1, 1]) == pytest.approx(0.5)


def test_spearman_with_ties_by_hand():
    # ranks (1, 2.5, 2.5, 4) and (1, 3, 2, 4): sxy = 4.5, sxx = 4.5, syy = 5 -> 4.5 / sqrt(22.5)
    assert J.spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / 22.5 ** 0.5)
    assert J.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert J.agreement({"a": 1, "b": 2, "c": 3}, {"a": 1, "b": 3, "d": 0}) == pytest.approx(
        {"items": 2, "exact": 0.5, "within_one": 1.0, "spearman": 1.0, "weighted_kappa": J.weighted_kappa([1, 2], [1, 3])})


# --------------------------------------------------------------------------- the LLM judge against a fake server

class FakeJudge(http.server.BaseHTTPRequestHandler):
    """An OpenAI-compatible chat endpoint: score 5 when the answer contains the expected answer, else 1; the first
    request gets a 503 (to exercise the retry); requests are logged with their Authorization header."""

    log: list = []
    fail_first = True

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeJudge.log.append({"auth": self.headers.get("Authorization"), "body": body})
        if FakeJudge.fail_first:
            FakeJudge.fail_first = False
            self.send_response(503)
            self.end_headers()
            return
        user = body["messages"][1]["content"]
        expected = user.split("Expected answer: ")[1].split("\n")[0]
        answer = user.split("Model's answer: ")[1]
        score = 5 if expected in answer else 1
        reply = json.dumps({"choices": [{"message": {"role": "assistant",
                                                     "content": json.dumps({"score": score, "reason": "fake"})}}]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(reply.encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_server():
    FakeJudge.log, FakeJudge.fail_first = [], True
    server = http.server.HTTPServer(("127.0.0.1", 0), FakeJudge)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()


def test_the_judge_scores_caches_and_resumes_and_never_writes_the_key(tmp_path, fake_server, monkeypatch):
    run = write_run(tmp_path / "run", [(1.0, 1.2), (2.0, 2.0)])
    monkeypatch.setenv("FAKE_JUDGE_KEY", "sk-secret-123")
    client = J.ChatClient(fake_server, "fake-judge", api_key_env="FAKE_JUDGE_KEY", backoff=0.01)
    report = J.judge_run(run, client, records=RECORDS)
    # 2 records x 2 states x 3 slots (the failed record has none); S2 is answered alike before and after the
    # edit, so its post item has the pre item's prompt and takes its judgement: 10 sent, 2 shared
    assert report == {"scored": 10, "cached": 2, "failed": [], "path": str(J.llm_scores_path(run, "fake-judge")),
                      "items": 12}
    assert client.requests == 11                                # one 503, retried
    assert {x["auth"] for x in FakeJudge.log} == {"Bearer sk-secret-123"}
    assert all(x["body"]["temperature"] == 0 and x["body"]["model"] == "fake-judge" for x in FakeJudge.log)
    scores = J.read_scores(run, "llm:fake-judge", RECORDS)
    assert len(scores) == 12
    # r0 post S3 "something else" misses loc0b -> 1; every other answer contains its reference -> 5
    assert scores["r0:post:S3"] == 1 and scores["r0:pre:S3"] == 5 and scores["r1:post:S1"] == 5
    assert "sk-secret-123" not in "".join(p.read_text() for p in run.rglob("*") if p.is_file())

    again = J.ChatClient(fake_server, "fake-judge", api_key_env="FAKE_JUDGE_KEY")
    assert J.judge_run(run, again, records=RECORDS)["cached"] == 12 and again.requests == 0     # everything from the cache

    cache = J.llm_scores_path(run, "fake-judge")
    kept = cache.read_text().splitlines()
    cache.write_text("\n".join(kept[:-1]) + "\n" + kept[-1][:20])               # killed mid-line
    resumed = J.ChatClient(fake_server, "fake-judge", api_key_env="FAKE_JUDGE_KEY")
    assert J.judge_run(run, resumed, records=RECORDS)["scored"] == 1 and resumed.requests == 1


def test_a_refused_request_is_reported_not_retried(tmp_path, records):
    class Refuse(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.send_response(401)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        run = write_run(tmp_path / "run", [(1.0, 1.0)])
        client = J.ChatClient(f"http://127.0.0.1:{server.server_port}/v1", "m", backoff=0.01)
        report = J.judge_run(run, client, records=RECORDS)
        assert report["scored"] == 0 and len(report["failed"]) == 6 and "HTTP 401" in report["failed"][0]
        assert client.requests == 6                               # no retries on a 4xx other than 429
    finally:
        server.shutdown()


def test_a_filed_submission_is_read_from_its_gzipped_samples(tmp_path):
    import gzip

    plain = write_run(tmp_path / "plain", [(1.0, 1.2), (2.0, 2.0)])
    filed = tmp_path / "filed"
    filed.mkdir()
    (filed / "samples.jsonl.gz").write_bytes(gzip.compress((plain / "samples.jsonl").read_bytes()))
    assert J.load_items(filed, RECORDS) == J.load_items(plain, RECORDS) and len(J.load_items(plain, RECORDS)) == 12
    with pytest.raises(FileNotFoundError, match="neither samples.jsonl nor samples.jsonl.gz"):
        J.load_items(tmp_path, RECORDS)


def test_a_run_without_free_answers_says_how_to_record_them(tmp_path):
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "samples.jsonl").write_text(json.dumps({"id": "r0", "status": "ok", "pre": {"U": 1}, "post": {"U": 1}}) + "\n")
    with pytest.raises(ValueError, match="--free-answers"):
        J.load_items(folder, RECORDS)


# --------------------------------------------------------------------------- annotators

def _annotate(src, dst, score_of):
    with open(src, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        row["score"] = score_of(row)
    with open(dst, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=J.CSV_FIELDS)
        w.writeheader()
        w.writerows(rows)


def test_two_annotators_round_trip_through_the_csv_and_agree_as_computed_by_hand(tmp_path):
    run = write_run(tmp_path / "run", [(1.0, 1.5), (2.0, 1.0)])
    sheet = tmp_path / "sheet.csv"
    assert J.export_csv(run, sheet, RECORDS) == 12 and "5: essentially correct" in sheet.with_suffix(".rubric.txt").read_text()
    _annotate(sheet, tmp_path / "a.csv", lambda r: "5" if r["reference"] in r["answer"] else "1")
    _annotate(sheet, tmp_path / "b.csv", lambda r: "4" if r["slot"] == "S1" else ("5" if r["reference"] in r["answer"] else "2"))
    assert J.import_csv(run, tmp_path / "a.csv", "a", "test annotator A", RECORDS) == 12
    assert J.import_csv(run, tmp_path / "b.csv", "b", "test annotator B", RECORDS) == 12
    a, b = J.read_scores(run, "human:a"), J.read_scores(run, "human:b")
    res = J.agreement(a, b)
    # S1 (4 items): a 5, b 4 -> within one; S2 (4): both 5; S3: pre both 5, post a 1 / b 2 (2 items)
    assert res["items"] == 12 and res["exact"] == pytest.approx(6 / 12) and res["within_one"] == 1.0
    assert J.read_scores(run, "human")["r0:post:S3"] == pytest.approx(1.5)     # mean of the two annotators
    assert json.loads(J.human_scores_path(run, "a").read_text().splitlines()[0])["who"] == "test annotator A"


def test_a_bad_annotation_row_is_named(tmp_path):
    run = write_run(tmp_path / "run", [(1.0, 1.5)])
    sheet = tmp_path / "sheet.csv"
    J.export_csv(run, sheet, RECORDS)
    _annotate(sheet, tmp_path / "bad.csv", lambda r: "7" if r["item"] == "r0:post:S2" else "3")
    with pytest.raises(ValueError, match=r"bad.csv: row 6, item r0:post:S2: field 'score': '7'"):
        J.import_csv(run, tmp_path / "bad.csv", "x", "test", RECORDS)
    _annotate(sheet, tmp_path / "moved.csv", lambda r: "3")
    rows = list(csv.DictReader(open(tmp_path / "moved.csv", newline="")))
    rows[0]["answer"] = "edited by hand"
    with open(tmp_path / "moved.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=J.CSV_FIELDS)
        w.writeheader()
        w.writerows(rows)
    with pytest.raises(ValueError, match="row 2, item r0:pre:S1: field 'answer' differs"):
        J.import_csv(run, tmp_path / "moved.csv", "x", "test", RECORDS)


# --------------------------------------------------------------------------- calibrate

def _score_all(run, table):
    """Human scores from ``{item: score}`` through the CSV path."""
    sheet = run / "sheet.csv"
    J.export_csv(run, sheet, RECORDS)
    _annotate(sheet, run / "done.csv", lambda r: str(table[r["item"]]))
    J.import_csv(run, run / "done.csv", "t", "test table", RECORDS)


def test_calibration_correlates_record_delta_u_with_judged_degradation_by_hand(tmp_path):
    # four records, ΔU_r = 0.1, 0.2, 0.3, 0.4; pre scores all 5; post S1..S3 chosen so that D_r = 0, 1, 1, 2
    post = {0: (5, 5, 5), 1: (4, 4, 4), 2: (2, 5, 5), 3: (3, 3, 3)}
    run = write_run(tmp_path / "rome", [(1.0, 1.1), (1.0, 1.2), (2.0, 2.6), (1.0, 1.4)])
    table = {f"r{i}:{st}:{s}": (5 if st == "pre" else post[i][j]) for i in post for st in J.STATES
             for j, s in enumerate(J.SLOTS)}
    _score_all(run, table)
    points = C.run_points(run, "human")
    assert points.delta_u_records == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert points.degradation == pytest.approx([0, 1, 1, 2])
    assert points.delta_u() == pytest.approx(6.3 / 5.0 - 1)                    # ratio of means: 6.3 / 5.0
    res = C.calibrate([points], bootstrap=200)
    # ranks (1,2,3,4) vs (1,2.5,2.5,4): sxy = 4.5, sxx = 5, syy = 4.5
    assert res["per_record"]["spearman"] == pytest.approx(4.5 / 22.5 ** 0.5)
    assert res["per_run"]["spearman"] is None and "three runs" in res["per_run"]["note"]
    assert res["per_slot"]["S1"]["records"] == 4
    # S1 alone: D = 0, 1, 3, 2 -> ranks (1, 2, 4, 3) against (1, 2, 3, 4): 1 - 6 * 2 / (4 * 15) = 0.8
    assert res["per_slot"]["S1"]["spearman"] == pytest.approx(0.8)
    assert C.run_points(run, "human", slots=("S1",)).degradation == pytest.approx([0, 1, 3, 2])
    assert C.run_points(run, "human", slots=("S2", "S3")).degradation == pytest.approx([0, 1, 0, 2])
    with pytest.raises(ValueError, match="slots must be among"):
        C.run_points(run, "human", slots=("S4",))
    # 4 records: a resample often repeats one record only, so the interval may be withheld (None), never wrong
    lo, hi = res["per_record"]["spearman_ci"]
    assert (lo is None and hi is None) or lo <= res["per_record"]["spearman"] <= hi


def test_per_run_calibration_and_the_figure_through_the_cli(tmp_path, records):
    runs = []
    # three editors whose mean ΔU rises (0%, +10%, +30%) with their degradation (0, 1, 3 on S1 only)
    for name, rise, drop in (("null", 1.0, 0), ("ft", 1.1, 1), ("ike", 1.3, 3)):
        run = write_run(tmp_path / name, [(1.0, rise), (2.0, 2.0 * rise)], editor=name)
        _score_all(run, {f"r{i}:{st}:{s}": (5 - drop if (st, s) == ("post", "S1") else 5)
                         for i in range(2) for st in J.STATES for s in J.SLOTS})
        runs.append(run)
    out, fig = tmp_path / "calib.json", tmp_path / "calib.svg"
    result = CliRunner().invoke(main, ["calibrate", *map(str, runs), "--figure", str(fig), "--out", str(out),
                                       "--bootstrap", "200"])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["per_run"]["spearman"] == pytest.approx(1.0)                    # same order on both axes
    assert [r["degradation"] for r in doc["runs"]] == pytest.approx([0, 1 / 3, 1])   # S1 drop over 3 slots
    assert [r["label"] for r in doc["runs"]] == ["null", "ft", "ike"]
    assert fig.stat().st_size > 1000 and fig.read_text().lstrip().startswith("<?xml")
    assert "per run (n = 3): Spearman +1.000" in result.output


def test_the_judge_command_exports_and_reports_agreement(tmp_path, records):
    run = write_run(tmp_path / "run", [(1.0, 1.5)])
    sheet = tmp_path / "s.csv"
    r = CliRunner().invoke(main, ["judge", str(run), "--export-csv", str(sheet)])
    assert r.exit_code == 0 and "6 items" in r.output, r.output
    for name in ("a", "b"):
        _annotate(sheet, tmp_path / f"{name}.csv", lambda row: "5")
        r = CliRunner().invoke(main, ["judge", str(run), "--import-csv", str(tmp_path / f"{name}.csv"),
                                      "--annotator", name, "--who", "test"])
        assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["judge", str(run), "--agreement", "human:a", "--agreement", "human:b"])
    assert r.exit_code == 0 and "items 6, exact 1.000" in r.output, r.output
    r = CliRunner().invoke(main, ["judge", str(run)])
    assert r.exit_code != 0 and "nothing to do" in r.output


# --------------------------------------------------------------------------- the runner records the free answers

@pytest.mark.model
def test_a_run_records_greedy_free_answers_before_and_after_the_edit(data_dir, tmp_path):
    from editprobe.benchmark.runner import RunConfig, run
    from editprobe.dataset_builder.sources import convert_file
    from tests.benchmark_fixtures import build_zsre_set, light_task

    task = light_task(tmp_path, build_zsre_set(data_dir, tmp_path / "pset", n=2), max_new_tokens=4)
    out = tmp_path / "noop"
    doc = run(RunConfig(task=str(task), editor="noop", output_dir=out, cache_dir=tmp_path / "cache", free_answers=6),
              progress=False)
    assert doc["provenance"]["free_answers"]["max_new_tokens"] == 6
    records = {r["id"]: r for r in convert_file(data_dir / "knowedit" / "zsre_test.json").records[:2]}
    lines = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert len(lines) == 2
    for line in lines:
        pre, post = line["pre"]["free_answers"], line["post"]["free_answers"]
        assert [x["slot"] for x in pre] == ["S1", "S2", "S3"]          # ZsRE records carry two locality prompts
        assert all(set(x) == {"slot", "answer"} and x["answer"] for x in pre)   # model text only, none of the data's
        assert [x["answer"] for x in post] == [x["answer"] for x in pre]   # noop changes nothing; greedy is exact
    items = J.load_items(out)                                           # queries from the run's dataset
    rec = records[lines[0]["id"]]
    first = [it for it in items if it.record_id == rec["id"]]
    assert [(it.state, it.slot) for it in first] == [(st, s) for st in J.STATES for s in J.SLOTS]
    assert first[0].query == rec["prompt"] and first[0].reference == rec["answer"] and first[3].reference == rec["alt"]
    assert first[1].query == rec["locality"][0]["prompt"]
    assert J.export_csv(out, tmp_path / "sheet.csv") == 12


# --------------------------------------------------------------------------- the committed calibration sample

def test_the_committed_calibration_sample_follows_from_its_runs_and_scores():
    """docs/calibration: the filed runs validate, every score names an annotator that says what it is, and the
    committed numbers are what `editprobe calibrate` gives on the committed runs and scores."""
    from pathlib import Path

    from editprobe.leaderboard.validation import validate_folder

    root = Path(__file__).resolve().parent.parent / "docs" / "calibration"
    runs = [root / "runs" / "smollm2-135m-instruct" / e / "zsre-fast" for e in ("null", "ft", "ike", "rome", "memit")]
    report = validate_folder(root / "runs")
    assert len(report.accepted) == 5 and not report.rejected, report.rejected
    for run in runs:
        for name in ("A", "B"):
            lines = [json.loads(x) for x in J.human_scores_path(run, name).read_text().splitlines()]
            assert len(lines) == 120 and all("not a person" in x["who"] for x in lines)
    for slots, doc in ((("S2", "S3"), "calibration.json"), (J.SLOTS, "calibration_all.json")):
        committed = json.loads((root / doc).read_text())
        fresh = C.calibrate([C.run_points(r, "human", slots=slots) for r in sorted(runs)])
        assert committed["slots"] == list(slots)
        for part in ("per_record", "per_run"):
            for key, value in committed[part].items():
                assert fresh[part][key] == pytest.approx(value), (doc, part, key)
        assert [r["delta_u"] for r in fresh["runs"]] == pytest.approx([r["delta_u"] for r in committed["runs"]])
