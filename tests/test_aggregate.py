"""The runner's aggregation (benchmark/aggregate.py) on lines a dataset shapes: here records without any
rephrase probe, as every WikiData_recent record is. The expected numbers come from the leaderboard's
independent recomputation (leaderboard/aggregates.py), which never imports the benchmark."""

from __future__ import annotations

import json

from editprobe.benchmark.aggregate import aggregate
from editprobe.benchmark.tasks import load_task
from editprobe.leaderboard.aggregates import mismatches, recompute
from editprobe.leaderboard.known_tasks import load_known_tasks
from editprobe.leaderboard.validation import settings_for
from tests.leaderboard_fixtures import TASKS, load


def test_records_without_rephrasings_give_a_null_generalization_and_the_leaderboard_agrees():
    doc, lines = load("zsre-ft")
    for line in lines:
        line["post"].pop("generalization", None)
        line["pre"].pop("generalization", None)
    ours = json.loads(json.dumps(aggregate(lines, load_task(str(TASKS / "zsre.yaml")))))
    assert ours["metrics"]["generalization"] == {"value": None, "ci_low": None, "ci_high": None}
    assert ours["metrics"]["reliability"]["value"] is not None
    theirs = recompute(lines, settings_for(doc, load_known_tasks(TASKS)["zsre"]))
    assert [m for key in theirs for m in mismatches(theirs[key], ours.get(key), key)] == []
