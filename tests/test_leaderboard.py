"""Leaderboard: validation of submissions, filing, and the static site (HTML checked as text here;
tests/test_site_browser.py drives it in a browser).

The runs in tests/leaderboard_fixtures/ come from the project's runner; every number these tests expect
is computed here from the samples with plain arithmetic, not by the leaderboard's code."""

from __future__ import annotations

import copy
import csv
import gzip
import hashlib
import io
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from editprobe.leaderboard.cli import leaderboard as leaderboard_cli
from editprobe.leaderboard.cli import submit as submit_cli
from editprobe.leaderboard.known_tasks import load_known_tasks
from editprobe.leaderboard.site import SiteError, build, guide_markdown, render_markdown
from editprobe.leaderboard.submissions import path_component, read_run
from editprobe.leaderboard.submit import SubmissionError, submit
from editprobe.leaderboard.validation import check_run, validate_folder, validate_runs

from tests.leaderboard_fixtures import (build_fixture_site, FIXTURES, HOSTILE, TASKS, derive, file_run, load, ok_lines, ratio_of_means,
                                        write_run)

KNOWN = load_known_tasks(TASKS)
MODEL_DIR = "smollm2-135m-instruct"


def check(tmp_path: Path, doc: dict, lines: list[dict], name: str = "run") -> str | None:
    folder = write_run(tmp_path / name, doc, lines)
    return check_run(read_run(folder / "results.json"), KNOWN)


# --------------------------------------------------------------------------- the real runs


@pytest.mark.parametrize("name", ["zsre-noop", "zsre-ft"])
def test_real_runs_are_accepted_and_match_hand_computed_aggregates(tmp_path, name):
    doc, lines = load(name)
    assert check(tmp_path, doc, lines) is None
    ok = ok_lines(lines)
    pre = [x["pre"]["U"] for x in ok]
    post = [x["post"]["U"] for x in ok]
    u = doc["uncertainty"]["U"]
    assert u["u_pre"]["value"] == pytest.approx(sum(pre) / len(pre), rel=1e-12)
    assert u["u_post"]["value"] == pytest.approx(sum(post) / len(post), rel=1e-12)
    assert u["delta_u"]["value"] == pytest.approx(ratio_of_means(lines), rel=1e-9, abs=1e-12)
    assert u["abs_diff"]["value"] == pytest.approx(sum(b - a for a, b in zip(pre, post)) / len(ok), abs=1e-12)
    rel = [sum(x["post"]["reliability"]) / len(x["post"]["reliability"]) for x in ok]
    assert doc["metrics"]["reliability"]["value"] == pytest.approx(sum(rel) / len(rel), rel=1e-12)
    assert doc["counts"] == {"records": len(lines), "ok": len(ok), "failed": len(lines) - len(ok)}


def test_noop_control_has_zero_delta_and_ft_does_not(tmp_path):
    noop, _ = load("zsre-noop")
    assert noop["uncertainty"]["U"]["delta_u"]["value"] == 0.0
    ft, ft_lines = load("zsre-ft")
    assert ft["provenance"]["editor"]["name"] == "ft"
    assert any(x["pre"]["responses"] != x["post"]["responses"] for x in ok_lines(ft_lines))


def test_dataset_override_hash_is_accepted_by_substituting_the_reported_path():
    doc, _ = load("zsre-noop")
    spec = yaml.safe_load((TASKS / "zsre.yaml").read_text())
    assert doc["provenance"]["dataset"]["path"] != spec["dataset"]["path"]  # the run used --dataset

    def sha(s):
        return hashlib.sha256(json.dumps(s, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    overridden = {**spec, "dataset": {**spec["dataset"], "path": doc["provenance"]["dataset"]["path"]}}
    assert doc["provenance"]["task"]["hash"] == sha(overridden) != sha(spec)
    assert KNOWN["zsre"].accepts(doc["provenance"]["task"]["hash"], doc["provenance"]["dataset"]["path"])
    assert not KNOWN["zsre"].accepts(doc["provenance"]["task"]["hash"], "some/other/path")


def test_fixtures_match_the_repository_task_files():
    """Fails when tasks/zsre.yaml changes: regenerate tests/leaderboard_fixtures (see its README)."""
    doc, _ = load("zsre-noop")
    current = load_known_tasks()["zsre"]
    assert current.accepts(doc["provenance"]["task"]["hash"], doc["provenance"]["dataset"]["path"]), \
        "tasks/zsre.yaml changed since the leaderboard fixtures were made; regenerate them"


def test_limited_run_is_accepted_but_flagged_not_ranked(tmp_path):
    doc, lines = load("zsre-noop")
    run = read_run(write_run(tmp_path / "r", doc, lines) / "results.json")
    assert check_run(run, KNOWN) is None
    assert run.flags == ["partial: --limit 2"]


# --------------------------------------------------------------------------- rejections


@pytest.mark.parametrize("field", ["uncertainty.U.delta_u.value", "uncertainty.U.u_pre.value",
                                   "uncertainty.U_epis.abs_diff.ci_high", "metrics.reliability.value",
                                   "metrics.locality.ci_low", "adoption.old_pre.value",
                                   "breakdowns.level.3.delta_u.value", "breakdowns.topic.Science.u_post.value"])
def test_tampered_aggregate_is_rejected_naming_the_field(tmp_path, field):
    doc, lines = load("zsre-ft")
    node = doc
    *parents, last = field.split(".")
    for key in parents:
        node = node[key]
    node[last] = node[last] + 0.01
    reason = check(tmp_path, doc, lines)
    assert reason is not None and reason.startswith(f"aggregate mismatch: {field} is ")


def test_tampered_count_and_extra_group_are_rejected(tmp_path):
    doc, lines = load("zsre-ft")
    bad = copy.deepcopy(doc)
    bad["counts"]["records"] = 5
    assert "counts.records" in check(tmp_path, bad, lines, "a")
    bad = copy.deepcopy(doc)
    bad["breakdowns"]["topic"]["History"] = bad["breakdowns"]["topic"]["Science"]  # a topic with no record
    assert "aggregate mismatch: breakdowns.topic.History" in check(tmp_path, bad, lines, "b")


def test_tampered_samples_are_caught(tmp_path):
    doc, lines = load("zsre-ft")
    lines = copy.deepcopy(lines)
    lines[0]["post"]["U"] += 0.05
    assert "uncertainty.U." in check(tmp_path, doc, lines)
    del lines[0]["post"]["U_level"]
    assert "missing field post.U_level" in check(tmp_path, doc, lines, "b")
    lines[0]["post"]["U_level"] = ["high"] * 6
    assert check(tmp_path, doc, lines, "c").startswith("samples.jsonl.gz: malformed samples (ValueError:")


def test_schema_violation_is_rejected_naming_the_field(tmp_path):
    doc, lines = load("zsre-noop")
    doc["counts"]["records"] = "two"
    folder = write_run(tmp_path / "bad", doc, lines)
    run = read_run(folder / "results.json")
    reason = check_run(run, KNOWN)
    assert reason.startswith("does not match the results schema: field 'counts.records'")
    doc2 = copy.deepcopy(doc)
    doc2["counts"]["records"] = 2
    del doc2["provenance"]["task"]
    assert "schema" in check(tmp_path, doc2, lines, "b") and "'task' is a required property" in \
        check(tmp_path, doc2, lines, "b")


@pytest.mark.parametrize("change, expected", [
    (lambda p: p["task"].update(hash="0" * 64), "task hash 000000000000… is not a known hash of zsre v2"),
    (lambda p: p["task"].update(name="trivia"), "unknown task 'trivia' (known: zsre)"),
    (lambda p: p["task"].update(version=1), "task zsre version 1 is not the current version 2"),
    (lambda p: p["dataset"].update(split="train"), "provenance.dataset.split is 'train' but task zsre uses 'test'"),
])
def test_unknown_task_is_rejected(tmp_path, change, expected):
    doc, lines = load("zsre-noop")
    change(doc["provenance"])
    assert expected in check(tmp_path, doc, lines)


def test_unreadable_files_are_rejected(tmp_path):
    folder = tmp_path / "a"
    folder.mkdir()
    (folder / "results.json").write_text("{not json")
    assert "not readable JSON" in check_run(read_run(folder / "results.json"), KNOWN)
    doc, lines = load("zsre-noop")
    folder = write_run(tmp_path / "b", doc, lines)
    (folder / "samples.jsonl.gz").unlink()
    assert check_run(read_run(folder / "results.json"), KNOWN) == "no samples.jsonl.gz beside results.json"
    folder = write_run(tmp_path / "c", doc, lines)
    (folder / "samples.jsonl.gz").write_bytes(b"not gzip")
    assert "samples.jsonl.gz" in check_run(read_run(folder / "results.json"), KNOWN)


def test_failed_share_above_ten_percent_is_flagged(tmp_path):
    doc, lines = load("zsre-noop")
    failed_doc, failed_lines = derive(doc, lines, fail=(lines[1]["id"],), limit=None)
    run = read_run(write_run(tmp_path / "f", failed_doc, failed_lines) / "results.json")
    assert check_run(run, KNOWN) is None
    assert failed_doc["counts"] == {"records": 2, "ok": 1, "failed": 1}
    assert run.flags == ["1 of 2 records failed (> 10%)"]


def test_validate_folder_reports_each_bad_run_in_one_line(tmp_path):
    sub = tmp_path / "sub"
    noop, noop_lines = load("zsre-noop")
    ft, ft_lines = load("zsre-ft")
    file_run(sub, noop, noop_lines)
    file_run(sub, ft, ft_lines)
    # same samples under another editor name: duplicate by content
    renamed = copy.deepcopy(noop)
    renamed["provenance"]["editor"]["name"] = "renamed"
    renamed["provenance"]["created"] = "2099-01-02T00:00:00+00:00"
    file_run(sub, renamed, noop_lines)
    # tampered number
    tampered = copy.deepcopy(ft)
    tampered["provenance"]["editor"]["name"] = "tampered"
    tampered["uncertainty"]["U"]["delta_u"]["value"] = -0.5
    file_run(sub, tampered, ft_lines)
    # misfiled: a valid run in the wrong folder
    misfiled, misfiled_lines = derive(noop, noop_lines, editor="other", post_scale=1.1)
    write_run(sub / MODEL_DIR / "wrong" / "zsre", misfiled, misfiled_lines)

    report = validate_folder(sub, TASKS)
    assert sorted(r.path.parent.name for r in report.accepted) == ["zsre", "zsre"]
    assert {r.doc["provenance"]["editor"]["name"] for r in report.accepted} == {"noop", "ft"}
    reasons = {r.path.parent.parent.name: r.reason for r in report.rejected}
    assert set(reasons) == {"renamed", "tampered", "wrong"}
    assert reasons["renamed"] == f"duplicate of {sub / MODEL_DIR / 'noop' / 'zsre' / 'results.json'}: " \
                                 "the same samples (timings aside)"
    assert reasons["tampered"].startswith("aggregate mismatch: uncertainty.U.delta_u.value is -0.5 in results.json")
    assert reasons["wrong"] == (f"filed under {MODEL_DIR}/wrong/zsre but its provenance (model, editor, task) "
                                f"belongs under {MODEL_DIR}/other/zsre")
    for r in report.rejected:
        assert "\n" not in str(r) and str(r).startswith(str(r.path) + ": ")


def test_uncompressed_samples_in_the_submissions_folder_are_rejected(tmp_path):
    doc, lines = load("zsre-noop")
    folder = file_run(tmp_path / "sub", doc, lines)
    plain = folder / "samples.jsonl"
    plain.write_bytes(gzip.decompress((folder / "samples.jsonl.gz").read_bytes()))
    (folder / "samples.jsonl.gz").unlink()
    assert [str(r) for r in validate_folder(tmp_path / "sub", TASKS).rejected] == [
        f"{folder / 'results.json'}: the samples must be stored compressed as samples.jsonl.gz (found samples.jsonl)"]


def test_rerun_of_the_same_experiment_is_a_duplicate(tmp_path):
    """Same model, revision, editor, hyper-parameters and task hash; different samples (a rerun)."""
    ft, ft_lines = load("zsre-ft")
    first = write_run(tmp_path / "first", ft, ft_lines)
    rerun = write_run(tmp_path / "rerun", *derive(ft, ft_lines, post_scale=1.01, created="2099-01-01T00:00:00+00:00"))
    report = validate_runs([read_run(rerun / "results.json"), read_run(first / "results.json")], KNOWN)
    assert [r.path.parent.name for r in report.accepted] == ["first"]  # the earlier-created run stays
    assert [str(r) for r in report.rejected] == [
        f"{rerun / 'results.json'}: duplicate of {first / 'results.json'}: same model, revision, editor, "
        "hyper-parameters and task hash"]
    sub = tmp_path / "sub"
    submit(first, sub, known=KNOWN)
    with pytest.raises(SubmissionError, match="already holds a run of the same model, editor, hyper-parameters "
                                              "and task .a rerun..; remove it or pass --replace to replace it"):
        submit(rerun, sub, known=KNOWN)


def test_validate_cli_exit_status_and_lines(tmp_path):
    sub = tmp_path / "sub"
    noop, noop_lines = load("zsre-noop")
    file_run(sub, noop, noop_lines)
    runner = CliRunner()
    result = runner.invoke(leaderboard_cli, ["validate", "--submissions", str(sub), "--tasks-dir", str(TASKS)])
    assert result.exit_code == 0, result.output
    assert "ok, shown but not ranked (partial: --limit 2)" in result.output
    bad = copy.deepcopy(noop)
    bad["provenance"]["editor"]["name"] = "bad"
    bad["metrics"]["fluency"]["value"] = 9.0
    path = file_run(sub, bad, noop_lines) / "results.json"
    result = runner.invoke(leaderboard_cli, ["validate", "--submissions", str(sub), "--tasks-dir", str(TASKS)])
    assert result.exit_code == 1
    bad_lines = [line for line in result.stderr.splitlines() if line.startswith(str(path))]
    assert len(bad_lines) == 1 and "metrics.fluency.value is 9.0 in results.json" in bad_lines[0]
    assert "1 accepted, 1 rejected" in result.stderr


# --------------------------------------------------------------------------- submit


def test_path_components_are_sanitised():
    assert path_component("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB__SmolLM2-135M"
    assert path_component(HOSTILE) == "_script_alert_1___script_"
    assert path_component("..") == "_" and path_component("") == "_"
    assert path_component(".hidden") == "_hidden"
    assert path_component("../../etc") == "_.__..__etc"  # one component: no "/" survives
    assert path_component("a b\tc") == "a_b_c"


def test_submit_files_validates_and_never_overwrites_silently(tmp_path):
    sub = tmp_path / "sub"
    src = FIXTURES / "zsre-ft"
    filed = submit(src, sub, known=KNOWN)
    target = sub / MODEL_DIR / "ft" / "zsre"
    assert filed.status == "filed" and filed.folder == target and filed.flags == ("partial: --limit 2",)
    assert (target / "results.json").read_bytes() == (src / "results.json").read_bytes()
    assert gzip.decompress((target / "samples.jsonl.gz").read_bytes()) == \
        gzip.decompress((src / "samples.jsonl.gz").read_bytes())
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in target.iterdir()}

    again = submit(src, sub, known=KNOWN)  # the same run: a no-op
    assert again.status == "unchanged"
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in target.iterdir()} == before

    doc, lines = load("zsre-ft")
    other = write_run(tmp_path / "other", *derive(doc, lines, post_scale=1.3, hparams={"lr": 0.5}))
    with pytest.raises(SubmissionError, match="already holds a different run; remove it or pass --replace"):
        submit(other, sub, known=KNOWN)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == {k: v[0] for k, v in before.items()}
    assert submit(other, sub, known=KNOWN, replace=True).status == "replaced"
    assert json.loads((target / "results.json").read_text())["provenance"]["editor"]["hparams"] == {"lr": 0.5}
    assert sorted(p.name for p in target.parent.iterdir()) == ["zsre"]  # no staging folder left


def test_submit_plain_runner_output_and_hostile_names(tmp_path):
    doc, lines = load("zsre-noop")
    doc, lines = derive(doc, lines, editor=HOSTILE, post_scale=1.2)
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.json").write_text(json.dumps(doc))
    (out / "samples.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))  # as the runner writes it
    filed = submit(out, tmp_path / "sub", known=KNOWN)
    assert filed.folder == tmp_path / "sub" / MODEL_DIR / "_script_alert_1___script_" / "zsre"
    assert (filed.folder / "samples.jsonl.gz").exists()


def test_submit_refuses_bad_and_duplicate_runs(tmp_path):
    sub = tmp_path / "sub"
    submit(FIXTURES / "zsre-noop", sub, known=KNOWN)
    doc, lines = load("zsre-noop")
    doc["provenance"]["editor"]["name"] = "noop-again"  # same samples under another name
    with pytest.raises(SubmissionError, match="duplicate of .*noop/zsre/results.json: the same samples"):
        submit(write_run(tmp_path / "dup", doc, lines), sub, known=KNOWN)
    doc["uncertainty"]["U"]["u_post"]["value"] = 1.0
    with pytest.raises(SubmissionError, match=r"results.json: aggregate mismatch: uncertainty.U.u_post.value"):
        submit(write_run(tmp_path / "bad", doc, lines), sub, known=KNOWN)
    assert not (sub / MODEL_DIR / "noop-again").exists()


def test_submit_cli(tmp_path):
    sub = tmp_path / "sub"
    doc, lines = load("zsre-noop")
    doc["metrics"]["reliability"]["value"] = 1.0
    bad = write_run(tmp_path / "bad", doc, lines)
    runner, options = CliRunner(), ["--submissions", str(sub), "--tasks-dir", str(TASKS)]
    result = runner.invoke(submit_cli, [str(FIXTURES / "zsre-noop"), str(bad), *options])
    assert result.exit_code == 1
    assert f"filed as {sub / MODEL_DIR / 'noop' / 'zsre'} (shown, not ranked: partial: --limit 2)" in result.stdout
    rejected = [line for line in result.stderr.splitlines() if line.startswith("rejected:")]
    assert rejected == [f"rejected: {bad / 'results.json'}: aggregate mismatch: metrics.reliability.value is 1.0 "
                        f"in results.json but 0.25 recomputed from samples.jsonl.gz"]
    result = runner.invoke(submit_cli, [str(FIXTURES / "zsre-noop"), *options])
    assert result.exit_code == 0 and "unchanged, already filed as" in result.stdout


# --------------------------------------------------------------------------- the site


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out, runs, pages = build_fixture_site(tmp_path_factory.mktemp("site"))
    return out, runs, pages


def rows_of(html: str) -> list[str]:
    """Editor names of the zsre table's rows, in page order (the text of each row's editor link)."""
    table = html.split('id="table-zsre"', 1)[1].split("</table>", 1)[0]
    return [m for m in re.findall(r'<td class="editor"><a href="[^"]+">([^<]*)</a>', table)]


def _table_editors(html: str) -> list[str]:
    unescape = {"&lt;": "<", "&gt;": ">", "&#34;": '"', "&#39;": "'", "&amp;": "&"}
    return [re.sub("&[#a-z0-9]+;", lambda m: unescape[m.group(0)], e) for e in rows_of(html)]


def expected_order(runs) -> tuple[list[str], dict[str, float]]:
    """The ranking rule worked out here from the samples: runs with Edit Success >= 0.5 (and not a control, not
    partial) by max(0, |ΔU - ΔU_null| - h_null); h_null is 0 here (the null run's post-edit U is its pre-edit U
    times 1.02, so every bootstrap resample gives the same ΔU). Then: edit did not take, controls, partial."""
    null = ratio_of_means(runs["null"][1])
    complete = {n: d for n, (d, _) in runs.items() if d["provenance"]["limit"] is None}
    ranked = [n for n, d in complete.items() if n not in ("noop", "null") and d["metrics"]["reliability"]["value"] >= 0.5]
    excess = {n: abs(ratio_of_means(runs[n][1]) - null) for n in ranked}
    did_not_take = [n for n, d in complete.items() if n not in ("noop", "null") and n not in ranked]
    partial = sorted((n for n in runs if n not in complete), key=lambda n: ratio_of_means(runs[n][1]))
    return sorted(ranked, key=excess.get) + did_not_take + ["null"] + partial, excess


def test_site_ranks_taken_edits_by_their_distance_from_the_noise_floor(site):
    out, runs, _ = site
    html = (out / "index.html").read_text()
    order, excess = expected_order(runs)
    assert _table_editors(html) == order == ["ft-b", "ft-a", HOSTILE, "null", "ft", "noop"]
    # ft-b lowers U by 18% and ft-a raises it by 37%: ranked by |ΔU - ΔU_null|, not by ΔU's sign
    assert excess["ft-b"] < excess["ft-a"]
    ranks = re.findall(r'<td data-sort="(\d*)" class="rank">', html.split('id="table-zsre"', 1)[1])
    assert ranks == ["1", "2", "", "", "", ""]
    table = html.split('id="table-zsre"', 1)[1]
    for badge in (">edit did not take</span>", ">control</span>", ">not ranked</span>"):
        assert badge in table, badge
    assert "How runs are ranked." in html and "max(0, |ΔU − ΔU<sub>null</sub>| − h<sub>null</sub>)" in html


def test_without_a_null_run_nothing_is_ranked(tmp_path):
    from editprobe.leaderboard.site import build
    from tests.leaderboard_fixtures import TASKS, file_run, site_runs

    for name, (doc, lines) in site_runs().items():
        if name != "null":
            file_run(tmp_path / "sub", doc, lines)
    report, _ = build(tmp_path / "sub", tmp_path / "site", tasks_dir=TASKS)
    html = (tmp_path / "site" / "index.html").read_text()
    assert report.ok and ">no null run</span>" in html
    assert re.findall(r'<td data-sort="(\d*)" class="rank">', html.split('id="table-zsre"', 1)[1]) == [""] * 5


def test_a_fixed_subset_is_ranked_against_the_null_run_on_the_same_records(tmp_path, monkeypatch):
    """A --limit run covering at least MIN_SUBSET_RECORDS records is a fixed subset: ranked, but its noise floor is
    the null run on the same records (by their ids), never one on other records. The fixtures have 2 records, so
    the threshold is lowered to 2 here; the real one (200) flags the same runs partial. The two whole-split runs
    keep one of the two records, so no null run shares their records."""
    from editprobe.leaderboard import validation
    from tests.leaderboard_fixtures import TASKS, file_run, load, derive

    noop, noop_lines = load("zsre-noop")
    ft, ft_lines = load("zsre-ft")
    runs = {"null": derive(noop, noop_lines, editor="null", post_scale=1.02, limit=2),   # subset: first 2
            "ft-a": derive(ft, ft_lines, editor="ft-a", post_scale=1.5, limit=2),       # subset: first 2
            "ft-b": derive(ft, ft_lines[:1], editor="ft-b", post_scale=0.9, limit=None),    # the whole split
            "ft-c": derive(ft, ft_lines[:1], editor="ft-c", post_scale=0.8, limit=5)}       # limit above it: whole
    for doc, lines in runs.values():
        file_run(tmp_path / "sub", doc, lines)
    assert [validation.subset_size(runs[n][0]) for n in runs] == [2, 2, None, None]
    assert [len(runs[n][1]) for n in runs] == [2, 2, 1, 1]

    monkeypatch.setattr(validation, "MIN_SUBSET_RECORDS", 2)
    report, _ = build(tmp_path / "sub", tmp_path / "site", tasks_dir=TASKS)
    assert report.ok
    rows = {r["editor"]: r for r in json.loads((tmp_path / "site" / "data" / "zsre.json").read_text())["runs"]}
    assert rows["ft-a"]["ranked"] and rows["ft-a"]["rank"] == 1 and rows["ft-a"]["subset"] == 2
    # the floor is the subset's null: |ΔU_ft-a - ΔU_null| less that null run's half-width, by hand
    null_doc = runs["null"][0]["uncertainty"]["U"]["delta_u"]
    half = (null_doc["ci_high"] - null_doc["ci_low"]) / 2
    expected = max(0.0, abs(ratio_of_means(runs["ft-a"][1]) - ratio_of_means(runs["null"][1])) - half)
    assert rows["ft-a"]["excess"] == pytest.approx(expected, abs=1e-12)
    # no null run covers the whole split, so the whole-split runs have no floor
    assert rows["ft-b"]["status"] == rows["ft-c"]["status"] == "no_floor" and rows["ft-b"]["subset"] is None
    table = (tmp_path / "site" / "index.html").read_text().split('id="table-zsre"', 1)[1]
    assert table.count(">first 2</span>") == 2

    monkeypatch.setattr(validation, "MIN_SUBSET_RECORDS", 200)
    report, _ = build(tmp_path / "sub", tmp_path / "site2", tasks_dir=TASKS)
    rows = {r["editor"]: r for r in json.loads((tmp_path / "site2" / "data" / "zsre.json").read_text())["runs"]}
    assert rows["ft-a"]["status"] == "partial" and rows["ft-a"]["flags"] == "partial: --limit 2"
    assert not any(r["ranked"] for r in rows.values())


def test_the_board_table_prints_every_run_in_the_ranking_order(tmp_path):
    from tests.leaderboard_fixtures import TASKS, file_run, site_runs

    runs = site_runs()
    for doc, lines in runs.values():
        file_run(tmp_path / "sub", doc, lines)
    result = CliRunner().invoke(leaderboard_cli, ["table", "--submissions", str(tmp_path / "sub"),
                                                  "--tasks-dir", str(TASKS)])
    assert result.exit_code == 0, result.output
    rows = [line.strip("|").split(" | ") for line in result.output.splitlines()[2:]]
    order, _ = expected_order(runs)
    assert [r[2].strip().replace("\\|", "|") for r in rows] == order
    assert [r[3].strip() for r in rows] == ["1", "2", "edit did not take", "control", "not ranked", "not ranked"]
    for r in rows:   # ΔU as a percentage, worked out from the samples here
        editor = r[2].strip().replace("\\|", "|")
        assert r[8].strip().startswith(f"{100 * ratio_of_means(runs[editor][1]):+.1f}% [")
    assert rows[4][4].strip() == rows[5][4].strip() == "first 2"   # the two --limit 2 runs
    assert rows[0][4].strip() == "2"   # no --limit: the whole split

    (tmp_path / "sub" / "broken").mkdir()
    (tmp_path / "sub" / "broken" / "results.json").write_text("{}")
    result = CliRunner().invoke(leaderboard_cli, ["table", "--submissions", str(tmp_path / "sub"),
                                                  "--tasks-dir", str(TASKS)])
    assert result.exit_code != 0 and "rejected; no table printed" in result.output


def test_site_downloads_match_the_table(site):
    out, runs, _ = site
    rows = list(csv.DictReader(io.StringIO((out / "data" / "zsre.csv").read_text())))
    data = json.loads((out / "data" / "zsre.json").read_text())
    assert [r["editor"] for r in rows] == [r["editor"] for r in data["runs"]] == [
        e.replace("&lt;", "<").replace("&gt;", ">") for e in rows_of((out / "index.html").read_text())]
    for row in data["runs"]:
        doc, lines = runs[row["editor"]]
        assert row["delta_u"] == pytest.approx(ratio_of_means(lines), rel=1e-9, abs=1e-12)
        assert row["records"] == len(lines)
        assert row["ranked"] == (row["editor"] in ("ft-a", "ft-b"))
        assert (row["excess"] is None) == (not row["ranked"])
    assert json.loads((out / "data" / "all_runs.json").read_text())["runs"] == data["runs"]


def test_site_run_page_shows_provenance_metrics_and_examples(site):
    out, runs, _ = site
    doc, lines = runs["ft"]
    page = (out / "runs" / f"{MODEL_DIR}--ft--zsre" / "index.html").read_text()
    p = doc["provenance"]
    for text in (p["task"]["hash"], p["git_hash"], p["dataset"]["fingerprint"], p["model"]["revision"],
                 f"editprobe {p['package_version']}", "bootstrap_seed = 0, task_seed = 42", "&#34;num_steps&#34;: 25",
                 "Per topic", "Per paraphrase level", "Per adoption group", "Example responses"):
        assert text in page, text
    first = ok_lines(lines)[0]
    response = first["post"]["responses"][0][0]
    escaped = response.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&#34;") \
        .replace("'", "&#39;")
    assert escaped in page
    tables = json.loads((out / "runs" / f"{MODEL_DIR}--ft--zsre" / "tables.json").read_text())["tables"]
    level6 = [r for r in tables["by_level"] if r["name"] == "6" and r["statistic"] == "delta_u"][0]
    ok = ok_lines(lines)
    expected = sum(x["post"]["U_level"][5] for x in ok) / sum(x["pre"]["U_level"][5] for x in ok) - 1
    assert level6["value"] == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert (out / "runs" / f"{MODEL_DIR}--ft--zsre" / "results.json").read_bytes() == \
        json.dumps(doc, indent=1, ensure_ascii=False).encode()


def test_site_escapes_hostile_strings_everywhere(site):
    out, _, _ = site
    built = {p: p.read_text(encoding="utf-8") for p in out.rglob("*") if p.suffix in (".html", ".svg", ".js")}
    for path, text in built.items():
        assert "<script>alert" not in text, path
        assert "onerror" not in text, path
        scripts = re.findall(r"<script\b[^>]*>", text)
        assert all(re.fullmatch(r'<script src="(\.\./\.\./)?static/table\.js" defer>', s) for s in scripts), scripts
    index = built[out / "index.html"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in index
    hostile_page = out / "runs" / f"{MODEL_DIR}--_script_alert_1___script_--zsre" / "index.html"
    assert "&lt;/pre&gt;&lt;script&gt;alert(3)&lt;/script&gt;" in built[hostile_page]
    for svg in out.glob("plots/*.svg"):
        ET.fromstring(svg.read_bytes())  # well-formed: a label could not break out of its <text>
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in (out / "plots" / "zsre-scatter.svg").read_text()


def test_site_loads_nothing_from_the_network(site):
    out, _, _ = site
    for path in [*out.rglob("*.html"), *out.rglob("*.js"), *out.rglob("*.css")]:
        text = path.read_text(encoding="utf-8")
        for m in re.finditer(r"https?://", text):
            before = text[max(0, m.start() - 6): m.start()]
            assert before == 'href="', f"{path}: URL outside a link: {text[m.start() - 40: m.end() + 40]!r}"
        assert not re.search(r"""(src|href)=["']//""", text), path  # no protocol-relative URLs
        assert "@import" not in text and "url(" not in text, path
    index = (out / "index.html").read_text()
    for src in re.findall(r'(?:src|href)="([^"]+)"', index):
        if not src.startswith("#"):
            assert (out / src.split("#")[0]).exists(), src  # every link and asset is in the site


def test_site_submit_page_comes_from_the_packaged_guide(site):
    out, _, _ = site
    page = (out / "submit.html").read_text()
    assert "generated from leaderboard/SUBMITTING.md" in page
    assert "editprobe submit runs/ft-zsre" in page and "What is checked" in page
    assert "Submitting to the editprobe leaderboard" not in page   # the title line is the page's own h1


def test_guide_and_markdown_rendering(tmp_path):
    guide = tmp_path / "guide.md"
    guide.write_text("# Title\n\nRun `x`.\n\n```bash\n# not a heading\n```\n\n"
                     "## Sub\n\nmore [schema](schemas/r.json) [site](https://example.org)\n")
    section, source = guide_markdown(guide)
    assert section.startswith("Run `x`.") and "# not a heading" in section and "## Sub" in section
    assert "Title" not in section and source == "guide.md"
    guide.write_text("# Only a title\n")
    with pytest.raises(SiteError, match="guide.md: the submission guide is empty"):
        guide_markdown(guide)
    html = render_markdown(section + "\n\n<script>alert(1)</script>\n")
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert '<a href="https://example.org">site</a>' in html and "schemas/r.json" not in html and "schema" in html


def test_build_refuses_rejected_runs_and_foreign_output(tmp_path):
    sub = tmp_path / "sub"
    doc, lines = load("zsre-noop")
    file_run(sub, doc, lines)
    bad = copy.deepcopy(doc)
    bad["provenance"]["editor"]["name"] = "bad"
    bad["counts"]["ok"] = 7
    file_run(sub, bad, lines)
    report, pages = build(sub, tmp_path / "site", tasks_dir=TASKS)
    assert pages == [] and not (tmp_path / "site").exists()
    assert [r.path.parent.parent.name for r in report.rejected] == ["bad"]
    report, pages = build(sub, tmp_path / "site", tasks_dir=TASKS, skip_invalid=True)
    assert (tmp_path / "site" / "index.html").exists() and len(report.accepted) == 1
    build(sub, tmp_path / "site", tasks_dir=TASKS, skip_invalid=True)  # an earlier build is replaced
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(SiteError, match="refusing to replace a folder that is not an editprobe site"):
        build(sub, foreign, tasks_dir=TASKS, skip_invalid=True)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_demo_flow_is_two_commands(tmp_path):
    """`make demo`'s ending: file the runs, then build the site."""
    sub, out = tmp_path / "submissions", tmp_path / "site"
    runner = CliRunner()
    result = runner.invoke(submit_cli, [str(FIXTURES / "zsre-noop"), str(FIXTURES / "zsre-ft"),
                                        "--submissions", str(sub), "--tasks-dir", str(TASKS)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(leaderboard_cli, ["build", "--submissions", str(sub), "--out", str(out),
                                             "--tasks-dir", str(TASKS)])
    assert result.exit_code == 0, result.output
    assert f"wrote 4 pages from 2 run(s) to {out}/index.html" in result.output
    assert len(list((out / "runs").iterdir())) == 2


def test_a_sequential_run_gets_its_curve_on_the_overview(tmp_path):
    """A task whose runs carry a ``sequential`` trajectory gets the ΔU-against-edits figure (drawn from it); a task
    without one gets none."""
    from editprobe.leaderboard.site import render_site
    from tests.leaderboard_fixtures import site_runs, write_run

    est = lambda v: {"value": v, "ci_low": v - 0.05, "ci_high": v + 0.05}  # noqa: E731
    runs = []
    for name, (doc, lines) in site_runs().items():
        if name == "ft-a":
            doc = {**doc, "sequential": {
                "steps": [{"step": i, "id": f"r{i}", "delta_u": 0.01 * i, "reliability": 1.0, "weight_change": i,
                           "edit_norm": 1.0} for i in range(1, 5)],
                "panels": [{"step": s, "weight_change": s,
                            **{g: {"n": 2, "delta_u": est(0.02 * s), "reliability": est(1.0), "locality": est(0.9)}
                               for g in ("edited", "untouched")}} for s in (2, 4)],
                "settings": None}}
        runs.append(read_run(write_run(tmp_path / "runs" / path_component(name), doc, lines) / "results.json"))
    render_site(runs, tmp_path / "site", known=load_known_tasks(TASKS))
    html = (tmp_path / "site" / "index.html").read_text()
    assert 'src="plots/zsre-sequential.svg"' in html
    svg = (tmp_path / "site" / "plots" / "zsre-sequential.svg").read_text()
    assert "edits applied" in svg and "earlier edits" in svg
    render_site([r for r in runs if "sequential" not in r.doc], tmp_path / "site2", known=load_known_tasks(TASKS))
    assert "sequential.svg" not in (tmp_path / "site2" / "index.html").read_text()
