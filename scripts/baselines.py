#!/usr/bin/env python3
"""Produce the leaderboard's baseline runs: every model x editor x task of a matrix, each run with the model's
default preset, resumed where it stopped and filed with ``editprobe submit`` when it completes.

    .venv/bin/python scripts/baselines.py --limit 200                 # the documented fixed subset
    .venv/bin/python scripts/baselines.py --models gemma-3-270m --editors noop,null,rome,memit,alphaedit
    .venv/bin/python scripts/baselines.py --sequential --dry-run      # print the commands only

Runs go to ``--runs-dir/<model>/<editor>/<task>/`` (a rerun of the same command resumes every unfinished run
and skips the finished ones, since ``editprobe run`` itself resumes) and are filed into ``--submissions``
(default: the committed ``leaderboard/submissions``). ``null`` runs first on every task: it fills the pre-edit
cache that every later editor of the same model and task reuses. A run that exits non-zero (nothing scored,
too many records failed) is reported and not filed; the matrix goes on. The exit status is non-zero when any
run failed.

On a GPU pass ``--device cuda`` and the runner's defaults batch edits (``--edit-batch 16 --target-batch 16``);
on the 2-core CPU a 200-record subset of one task takes hours per editor (see the README, "Baseline runs").
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

EP = [sys.executable, "-m", "editprobe"]
MODELS = ("smollm2-135m-instruct", "gemma-3-270m")
EDITORS = ("null", "noop", "ft", "ike", "rome", "memit", "alphaedit", "kn", "mend")
TASKS = ("zsre-fast", "wiki_recent-fast", "wiki_counterfact-fast")
SEQUENTIAL_TASK = "zsre_sequential-fast"
SEQUENTIAL_EDITORS = ("rome", "memit", "alphaedit")


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def matrix(models, editors, tasks, sequential: bool) -> list[tuple[str, str, str]]:
    """(model, editor, task) in the order they run: per model, editor-major with null first, then the
    sequential runs."""
    ordered = sorted(editors, key=lambda e: (e != "null", editors.index(e)))
    out = [(m, e, t) for m in models for e in ordered for t in tasks]
    if sequential:
        out += [(m, e, SEQUENTIAL_TASK) for m in models for e in SEQUENTIAL_EDITORS if e in editors]
    return out


def run_command(model: str, editor: str, task: str, out: Path, args) -> list[str]:
    cmd = EP + ["run", "--task", task, "--editor", editor, "--model", model, "--out", str(out), "--quiet",
                "--device", args.device]
    if args.limit:
        cmd += ["--limit", str(args.limit)]
    if args.cache_dir:
        cmd += ["--cache-dir", str(args.cache_dir)]
    return cmd


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=_csv, default=MODELS, help="comma-separated model ids")
    ap.add_argument("--editors", type=_csv, default=EDITORS, help="comma-separated editor names")
    ap.add_argument("--tasks", type=_csv, default=TASKS, help="comma-separated benchmark task names")
    ap.add_argument("--sequential", action="store_true",
                    help=f"also run {', '.join(SEQUENTIAL_EDITORS)} on {SEQUENTIAL_TASK}")
    ap.add_argument("--limit", type=int, default=None, help="the first N records of each task (default: all)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--cache-dir", type=Path, default=None)
    ap.add_argument("--runs-dir", type=Path, default=Path("build/baselines"))
    ap.add_argument("--submissions", type=Path, default=Path("leaderboard/submissions"))
    ap.add_argument("--no-submit", action="store_true", help="run only; file nothing")
    ap.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = ap.parse_args(argv)

    failed = []
    for model, editor, task in matrix(args.models, args.editors, args.tasks, args.sequential):
        out = args.runs_dir / model / editor / task
        cmd = run_command(model, editor, task, out, args)
        submit = EP + ["submit", str(out), "--submissions", str(args.submissions), "--replace"]
        if args.dry_run:
            print(shlex.join(cmd))
            if not args.no_submit:
                print(shlex.join(submit))
            continue
        start = time.monotonic()
        rc = subprocess.call(cmd)
        took = time.monotonic() - start
        if rc != 0:
            print(f"[baselines] {model} {editor} {task}: editprobe run exited {rc} after {took:.0f} s; not filed",
                  flush=True)
            failed.append((model, editor, task))
            continue
        print(f"[baselines] {model} {editor} {task}: done in {took:.0f} s", flush=True)
        if not args.no_submit and subprocess.call(submit) != 0:
            failed.append((model, editor, task))
    if failed:
        print(f"[baselines] {len(failed)} run(s) not filed: " + ", ".join("/".join(f) for f in failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
