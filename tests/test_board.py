"""The committed leaderboard (leaderboard/submissions/): every run there validates, the board covers both
embedded models and all three tasks, and tampering with a committed run's numbers is caught."""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path

import pytest
import yaml

from editprobe.leaderboard.known_tasks import load_known_tasks
from editprobe.leaderboard.validation import validate_folder


COMMITTED = Path(__file__).resolve().parent.parent / "leaderboard" / "submissions"
BOARD_MODELS = ("smollm2-135m-instruct", "gemma-3-270m")
BOARD_TASKS = ("zsre-fast", "wiki_recent-fast", "wiki_counterfact-fast")


def committed_runs() -> list[Path]:
    """Every results.json under leaderboard/submissions/<model>/<editor>/<task>/, from the folder listing."""
    return sorted(COMMITTED.glob("*/*/*/results.json"))


def test_the_readme_board_table_is_the_committed_runs_table():
    """Every number in the README's board table comes from a committed run: the table is what
    `editprobe leaderboard table` prints for leaderboard/submissions."""
    from editprobe.leaderboard.site import board_rows, markdown_board

    readme = (COMMITTED.parents[1] / "README.md").read_text(encoding="utf-8")
    start, end = "<!-- board-table: editprobe leaderboard table -->\n", "<!-- /board-table -->"
    assert start in readme and end in readme
    table = readme.split(start, 1)[1].split(end, 1)[0]
    assert table == markdown_board(board_rows(validate_folder(COMMITTED).accepted))


def test_every_committed_run_validates_and_the_board_covers_both_models_and_all_tasks():
    runs = committed_runs()
    report = validate_folder(COMMITTED)
    assert [str(r) for r in report.rejected] == []
    assert sorted(r.path for r in report.accepted) == runs
    cells = {(p.parts[-4], p.parts[-2]) for p in runs}
    assert cells >= {(m, t) for m in BOARD_MODELS for t in BOARD_TASKS}
    for model in BOARD_MODELS:   # every cell has its noise-floor control and at least one editor
        for task in BOARD_TASKS:
            editors = {p.parts[-3] for p in runs if p.parts[-4] == model and p.parts[-2] == task}
            assert "null" in editors and editors - {"null", "noop"}, (model, task, editors)


def test_a_committed_run_whose_aggregate_disagrees_with_its_samples_is_rejected(tmp_path):
    source = next(p for p in committed_runs() if p.parts[-3] == "rome")
    target = tmp_path / "sub" / Path(*source.parts[-4:-1])
    target.mkdir(parents=True)
    doc = json.loads(source.read_text(encoding="utf-8"))
    doc["uncertainty"]["U"]["delta_u"]["value"] += 0.01
    (target / "results.json").write_text(json.dumps(doc), encoding="utf-8")
    (target / "samples.jsonl.gz").write_bytes((source.parent / "samples.jsonl.gz").read_bytes())
    report = validate_folder(tmp_path / "sub")
    assert report.accepted == [] and len(report.rejected) == 1
    assert "aggregate mismatch: uncertainty.U.delta_u.value" in str(report.rejected[0])


def test_a_committed_sequential_run_is_checked_step_by_step_and_panel_by_panel(tmp_path):
    source = COMMITTED / "smollm2-135m-instruct" / "rome" / "zsre_sequential-fast"
    doc = json.loads((source / "results.json").read_text(encoding="utf-8"))
    lines = [json.loads(x) for x in gzip.decompress((source / "samples.jsonl.gz").read_bytes()).decode().splitlines()
             if x.strip()]
    edits = sorted((x for x in lines if x.get("kind") == "edit"), key=lambda x: x["step"])
    panel = min((x for x in lines if x.get("kind") == "panel"), key=lambda x: x["step"])
    # by hand: a step's ΔU is its record's U_post / U_pre - 1 (U_pre ~0.6, far above the floor); a panel's is the
    # ratio of its members' mean U; the counts are over the edit steps, not the panel lines
    assert doc["counts"]["records"] == len(edits) == 20
    assert doc["sequential"]["steps"][0]["delta_u"] == pytest.approx(edits[0]["post"]["U"] / edits[0]["pre"]["U"] - 1)
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    by_hand = mean([m["post"]["U"] for m in panel["edited"]]) / mean([m["pre"]["U"] for m in panel["edited"]]) - 1
    assert doc["sequential"]["panels"][0]["edited"]["delta_u"]["value"] == pytest.approx(by_hand)

    for keys in (("sequential", "panels", 0, "edited", "delta_u", "value"),
                 ("sequential", "steps", 3, "weight_change")):
        bad = copy.deepcopy(doc)
        node = bad
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] += 0.01
        target = tmp_path / "_".join(map(str, keys)) / Path(*source.parts[-3:])
        target.mkdir(parents=True)
        (target / "results.json").write_text(json.dumps(bad), encoding="utf-8")
        (target / "samples.jsonl.gz").write_bytes((source / "samples.jsonl.gz").read_bytes())
        report = validate_folder(target.parents[2])
        assert report.accepted == []
        assert f"aggregate mismatch: {'.'.join(map(str, keys))} is" in str(report.rejected[0])


def test_the_baselines_script_runs_null_first_and_every_editor_has_a_preset_for_every_model():
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, str(root / "scripts" / "baselines.py"), "--dry-run", "--limit", "200",
                          "--sequential"], capture_output=True, text=True, check=True, cwd=root).stdout
    runs = [line.split() for line in out.splitlines() if " run " in line]
    cells = [(c[c.index("--model") + 1], c[c.index("--editor") + 1], c[c.index("--task") + 1]) for c in runs]
    assert all(c[c.index("--limit") + 1] == "200" for c in runs)
    editors = ("null", "noop", "ft", "ike", "rome", "memit", "alphaedit", "kn", "mend")
    expected = [(m, e, t) for m in BOARD_MODELS for e in editors for t in BOARD_TASKS]
    expected += [(m, e, "zsre_sequential-fast") for m in BOARD_MODELS for e in ("rome", "memit", "alphaedit")]
    assert cells == expected
    presets = yaml.safe_load((root / "tasks" / "hparams" / "models.yaml").read_text())
    for model in BOARD_MODELS:
        for editor in editors[2:]:
            assert (root / "tasks" / "hparams" / editor / f"{presets[model]}.yaml").is_file(), (model, editor)
    tasks = load_known_tasks()
    assert {t for _, _, t in cells} <= set(tasks)
