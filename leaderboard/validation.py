"""Validation of submissions: every rejection is one line naming the file and the reason.

A run is accepted when
1. ``results.json`` matches ``schemas/results.schema.json`` and ``samples.jsonl.gz`` is readable;
2. its task is known: name and version of a ``tasks/*.yaml`` file, hash as in :mod:`editprobe.leaderboard.known_tasks`,
   dataset config/split/revision those of the task file;
3. every aggregate recomputed from the samples (:mod:`editprobe.leaderboard.aggregates`) equals the reported one;
4. inside a submissions folder, it is filed under ``<model>/<editor>/<task>/`` as its provenance says;
5. it is not a duplicate of a run accepted before it (same model, revision, editor, hyper-parameters and
   task hash; or the same samples content, timings aside).

Accepted runs that are partial — run with a ``--limit`` below :data:`MIN_SUBSET_RECORDS`, a single shard, no
scored record, or more than :data:`MAX_FAILED_SHARE` of their records failed — are shown on the site but flagged
and not ranked. A run on the first N >= :data:`MIN_SUBSET_RECORDS` records (:func:`subset_size`) is a fixed
subset: ranked, but only against the ``null`` run on the same records.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from editprobe.formats import MAX_FAILED_SHARE, schema_errors
from editprobe.leaderboard.aggregates import SampleError, Settings, lookup, mismatches, recompute
from editprobe.leaderboard.known_tasks import KnownTask, load_known_tasks
from editprobe.leaderboard.submissions import SAMPLES, Run, discover, samples_fingerprint, submission_parts



@dataclass(frozen=True)
class Rejection:
    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {' '.join(self.reason.split())}"  # always one line


@dataclass
class Report:
    accepted: list[Run] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.rejected


def _short(value) -> str:
    text = json.dumps(value) if not isinstance(value, float) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_task(doc: dict, known: dict[str, KnownTask]) -> str | None:
    task, dataset = doc["provenance"]["task"], doc["provenance"]["dataset"]
    spec = known.get(task["name"])
    if spec is None:
        return f"unknown task {task['name']!r} (known: {', '.join(sorted(known)) or 'none'})"
    if task["version"] != spec.version:
        return (f"task {spec.name} version {task['version']} is not the current version {spec.version} "
                f"of {Path(spec.source).name}")
    if not spec.accepts(task["hash"], dataset["path"]):
        return (f"task hash {task['hash'][:12]}… is not a known hash of {spec.name} v{spec.version} "
                f"({Path(spec.source).name} hashes to {spec.hash[:12]}…, or "
                f"{spec.hash_with_dataset_path(dataset['path'])[:12]}… with dataset.path {dataset['path']!r})")
    for key in ("config", "split", "revision"):
        if dataset[key] != spec.spec["dataset"].get(key):
            return (f"provenance.dataset.{key} is {dataset[key]!r} but task {spec.name} uses "
                    f"{spec.spec['dataset'].get(key)!r}")
    return None


def settings_for(doc: dict, task: KnownTask) -> Settings:
    u = task.spec["uncertainty"]
    sequential = task.spec.get("sequential") if task.spec.get("edit_mode") == "sequential" else None
    return Settings(levels=tuple(u["levels"]), floor=float(u["delta_floor"]), n_boot=int(u["bootstrap"]),
                    seed=int(doc["provenance"]["seeds"]["bootstrap_seed"]), sequential=sequential)


def check_aggregates(run: Run, task: KnownTask) -> str | None:
    try:
        expected = recompute(run.samples, settings_for(run.doc, task))
    except SampleError as exc:
        return f"{run.samples_path.name}: {exc}"
    except (TypeError, ValueError, KeyError, AttributeError) as exc:  # e.g. a string where a number belongs
        return f"{run.samples_path.name}: malformed samples ({type(exc).__name__}: {exc})"
    bad = [p for key in expected for p in mismatches(expected[key], run.doc.get(key), key)]
    if not bad:
        return None
    more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
    return (f"aggregate mismatch: {bad[0]} is {_short(lookup(run.doc, bad[0]))} in results.json but "
            f"{_short(lookup(expected, bad[0]))} recomputed from {run.samples_path.name}{more}")


def check_location(run: Run, root: Path) -> str | None:
    try:
        parts = run.path.parent.resolve().relative_to(Path(root).resolve()).parts
    except ValueError:
        return None
    expected = submission_parts(run.doc)
    if run.samples_path is not None and run.samples_path.name != SAMPLES:
        return f"the samples must be stored compressed as {SAMPLES} (found {run.samples_path.name})"
    if parts != expected:
        return (f"filed under {'/'.join(parts) or '.'} but its provenance (model, editor, task) "
                f"belongs under {'/'.join(expected)}")
    return None


#: The fewest records a ``--limit`` run may cover and still be ranked, as a fixed subset of its task (the first N
#: records, the same for every editor); below it a run is shown but flagged partial.
MIN_SUBSET_RECORDS = 200


def subset_size(doc: dict) -> int | None:
    """N when the run scored the first N records of its split under ``--limit N``; None for the whole split (no
    limit, or a limit above the split's size). A limit equal to the split's size cannot be told apart from a
    subset and counts as one."""
    limit = doc["provenance"].get("limit")
    return limit if limit is not None and doc["counts"]["records"] >= limit else None


def flags(doc: dict) -> list[str]:
    """Why an accepted run is not ranked (empty: ranked)."""
    p, c = doc["provenance"], doc["counts"]
    out = []
    subset = subset_size(doc)
    if subset is not None and subset < MIN_SUBSET_RECORDS:
        out.append(f"partial: --limit {p['limit']}")
    if p.get("shard"):
        out.append(f"one shard ({p['shard'].get('index')} of {p['shard'].get('count')})")
    if c["ok"] == 0:
        out.append("no scored record")
    elif c["records"] and c["failed"] / c["records"] > MAX_FAILED_SHARE:
        out.append(f"{c['failed']} of {c['records']} records failed (> {MAX_FAILED_SHARE:.0%})")
    return out


def check_run(run: Run, known: dict[str, KnownTask], root: Path | None = None) -> str | None:
    """The reason ``run`` is rejected, or None (then ``run.flags`` is set)."""
    if run.read_error:
        return run.read_error
    errors = schema_errors(run.doc, "results")
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return f"does not match the results schema: field {errors[0]}{more}"
    reason = check_task(run.doc, known)
    if reason is None:
        reason = check_aggregates(run, known[run.doc["provenance"]["task"]["name"]])
    if reason is None and root is not None:
        reason = check_location(run, root)
    if reason is None:
        run.flags = flags(run.doc)
    return " ".join(reason.split()) if reason else None


def identity(doc: dict) -> str:
    """Model, revision, editor, hyper-parameters and task hash: two runs sharing it are the same experiment."""
    p = doc["provenance"]
    return json.dumps([p["model"]["id"], p["model"]["revision"], p["editor"]["name"], p["editor"]["hparams"],
                       p["task"]["hash"]], sort_keys=True)


def validate_runs(runs: list[Run], known: dict[str, KnownTask], root: Path | None = None,
                  accepted_before: list[Run] = ()) -> Report:
    """Check each run, then reject duplicates (the earlier-created run of a pair stays)."""
    report = Report()
    passed = []
    for run in runs:
        reason = check_run(run, known, root)
        if reason:
            report.rejected.append(Rejection(run.path, reason))
        else:
            passed.append(run)
    by_identity = {identity(r.doc): r for r in accepted_before}
    by_samples = {samples_fingerprint(r.samples): r for r in accepted_before}
    for run in sorted(passed, key=lambda r: (r.doc["provenance"]["created"], str(r.path))):
        key, content = identity(run.doc), samples_fingerprint(run.samples)
        if key in by_identity:
            report.rejected.append(Rejection(run.path, f"duplicate of {by_identity[key].path}: same model, "
                                                       "revision, editor, hyper-parameters and task hash"))
        elif content in by_samples:
            report.rejected.append(Rejection(run.path, f"duplicate of {by_samples[content].path}: "
                                                       "the same samples (timings aside)"))
        else:
            by_identity[key] = by_samples[content] = run
            report.accepted.append(run)
    report.accepted.sort(key=lambda r: str(r.path))
    report.rejected.sort(key=lambda r: str(r.path))
    return report


def validate_folder(submissions: Path, tasks_dir: Path | None = None,
                    known: dict[str, KnownTask] | None = None) -> Report:
    """Every run under ``submissions``, checked against the task files in ``tasks_dir`` (default tasks/)."""
    if known is None:
        known = load_known_tasks(tasks_dir) if tasks_dir else load_known_tasks()
    return validate_runs(discover(submissions), known, root=Path(submissions))
