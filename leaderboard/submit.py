"""Filing a finished run into the submissions folder, after validating it.

``results.json`` is copied byte for byte; ``samples.jsonl`` is stored gzip-compressed (deterministically,
so filing the same run twice gives the same bytes). Filing the same run again — an identical results
document — changes nothing; a *different* run is never written over an existing one unless asked.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from editprobe.leaderboard.known_tasks import KnownTask, load_known_tasks
from editprobe.leaderboard.submissions import RESULTS, SAMPLES, discover, gzip_bytes, read_run, submission_parts
from editprobe.leaderboard.validation import check_run, identity, validate_runs


class SubmissionError(ValueError):
    """A run cannot be filed; the message is one line naming the file and the reason."""


@dataclass(frozen=True)
class Filed:
    status: str          # "filed" | "unchanged" | "replaced"
    folder: Path
    flags: tuple[str, ...]


def submit(results_dir: Path, submissions: Path, *, replace: bool = False,
           known: dict[str, KnownTask] | None = None) -> Filed:
    """Validate the run in ``results_dir`` and file it under ``submissions/<model>/<editor>/<task>/``."""
    results_dir, submissions = Path(results_dir), Path(submissions)
    known = load_known_tasks() if known is None else known
    results_path = results_dir / RESULTS
    if not results_path.exists():
        raise SubmissionError(f"{results_path}: no results file (expected the output folder of `editprobe run`)")
    run = read_run(results_path)
    reason = check_run(run, known)
    if reason:
        raise SubmissionError(f"{run.path}: {reason}")
    target = submissions.joinpath(*submission_parts(run.doc))
    existing = target / RESULTS
    if existing.exists():
        try:
            old = json.loads(existing.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None
        if old == run.doc:
            return Filed("unchanged", target, tuple(run.flags))
        if not replace:
            try:
                rerun = identity(old) == identity(run.doc)
            except (KeyError, TypeError):
                rerun = False
            what = ("a run of the same model, editor, hyper-parameters and task (a rerun?)" if rerun
                    else "a different run")
            raise SubmissionError(f"{run.path}: {target} already holds {what}; "
                                  "remove it or pass --replace to replace it")
    others = [r for r in discover(submissions) if r.path.parent.resolve() != target.resolve()]
    others = validate_runs(others, known, root=submissions).accepted
    duplicate = validate_runs([run], known, accepted_before=others).rejected
    if duplicate:
        raise SubmissionError(f"{run.path}: {duplicate[0].reason}")
    replacing = existing.exists()
    _write_folder(target, run.path.read_bytes(), gzip_bytes(run.samples_bytes))
    return Filed("replaced" if replacing else "filed", target, tuple(run.flags))


def _write_folder(target: Path, results: bytes, samples_gz: bytes) -> None:
    """Write both files into a staging folder, then swap it in, so a crash never leaves half a run."""
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = target.parent / f".{target.name}.tmp{os.getpid()}"
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir()
    (stage / RESULTS).write_bytes(results)
    (stage / SAMPLES).write_bytes(samples_gz)
    if target.exists():
        old = target.parent / f".{target.name}.old{os.getpid()}"
        target.rename(old)
        stage.rename(target)
        shutil.rmtree(old)
    else:
        stage.rename(target)
