"""``editprobe submit`` and ``editprobe leaderboard validate|build``."""

from __future__ import annotations

from pathlib import Path

import click

from editprobe.leaderboard.submissions import DEFAULT_SUBMISSIONS
from editprobe.options import out_option

_SUBMISSIONS = click.option(
    "--submissions", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_SUBMISSIONS,
    show_default=True, help="The submissions folder (<model>/<editor>/<task>/); relative to the current directory.")
_TASKS_DIR = click.option(
    "--tasks-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
    help="Folder of the task files whose versions and hashes runs must match  [default: the shipped tasks]")


@click.command("submit")
@click.argument("results_dirs", metavar="RESULTS_DIR...", nargs=-1, required=True,
                type=click.Path(exists=True, file_okay=False, path_type=Path))
@_SUBMISSIONS
@click.option("--replace", is_flag=True, help="Replace a different run already filed under the same name.")
@_TASKS_DIR
def submit(results_dirs: tuple[Path, ...], submissions: Path, replace: bool, tasks_dir: Path | None) -> None:
    """Validate finished runs and file them into the leaderboard's submissions folder.

    Each RESULTS_DIR is the output folder of `editprobe run` (results.json and samples.jsonl). A run
    is filed under <model>/<editor>/<task>/ (names sanitised) with its samples gzip-compressed.
    Filing the same run again does nothing; a different run is never written over an existing one
    unless --replace is given.

    \b
    Example:
      editprobe submit runs/ft-zsre runs/noop-zsre --submissions build/submissions
    """
    from editprobe.leaderboard.known_tasks import load_known_tasks
    from editprobe.leaderboard.submit import SubmissionError
    from editprobe.leaderboard.submit import submit as file_run

    known = load_known_tasks(tasks_dir) if tasks_dir else load_known_tasks()
    failures = 0
    for results_dir in results_dirs:
        try:
            filed = file_run(results_dir, submissions, replace=replace, known=known)
        except SubmissionError as exc:
            click.echo(f"rejected: {exc}", err=True)
            failures += 1
            continue
        note = f" (shown, not ranked: {'; '.join(filed.flags)})" if filed.flags else ""
        verb = {"filed": "filed as", "replaced": "replaced", "unchanged": "unchanged, already filed as"}[filed.status]
        click.echo(f"{results_dir}: {verb} {filed.folder}{note}")
    if failures:
        raise click.ClickException(f"{failures} of {len(results_dirs)} run(s) rejected; nothing was written for them")


@click.group("leaderboard")
def leaderboard() -> None:
    """Validate leaderboard submissions and build the static site.

    \b
    Example:
      editprobe leaderboard validate --submissions leaderboard/submissions
      editprobe leaderboard build --submissions leaderboard/submissions --out build/site
    """


def _print_report(report) -> None:
    for run in report.accepted:
        note = f"ok, shown but not ranked ({'; '.join(run.flags)})" if run.flags else "ok"
        click.echo(f"{run.path}: {note}")
    for rejection in report.rejected:
        click.echo(str(rejection), err=True)


@leaderboard.command("validate")
@_SUBMISSIONS
@_TASKS_DIR
def validate(submissions: Path, tasks_dir: Path | None) -> None:
    """Check every run in the submissions folder; one line per rejected file with the reason.

    Checks: the results schema, a known task version and hash, every aggregate recomputed from
    samples.jsonl.gz, the folder naming, and duplicates. Exits non-zero when any run is rejected.

    \b
    Example:
      editprobe leaderboard validate --submissions leaderboard/submissions
    """
    from editprobe.leaderboard.validation import validate_folder

    if not submissions.is_dir():
        raise click.ClickException(f"{submissions}: no such submissions folder")
    report = validate_folder(submissions, tasks_dir)
    _print_report(report)
    summary = f"{len(report.accepted)} accepted, {len(report.rejected)} rejected"
    if report.rejected:
        raise click.ClickException(summary)
    click.echo(summary)


@leaderboard.command("table")
@_SUBMISSIONS
@_TASKS_DIR
def table(submissions: Path, tasks_dir: Path | None) -> None:
    """Print the board as a Markdown table: every accepted run, ranked per task as on the site (rank, or why a run
    is not ranked), with Edit Success, generative adoption, Locality and ΔU with its 95% interval.

    \b
    Example:
      editprobe leaderboard table --submissions leaderboard/submissions
    """
    from editprobe.leaderboard.known_tasks import load_known_tasks
    from editprobe.leaderboard.site import board_rows, markdown_board
    from editprobe.leaderboard.validation import validate_folder

    if not submissions.is_dir():
        raise click.ClickException(f"{submissions}: no such submissions folder")
    known = load_known_tasks(tasks_dir) if tasks_dir else load_known_tasks()
    report = validate_folder(submissions, known=known)
    for rejection in report.rejected:
        click.echo(str(rejection), err=True)
    if report.rejected:
        raise click.ClickException(f"{len(report.rejected)} run(s) rejected; no table printed")
    click.echo(markdown_board(board_rows(report.accepted)), nl=False)


@leaderboard.command("build")
@_SUBMISSIONS
@out_option(default=Path("build/site"), help="Where to write the site (replaced if it holds an earlier build).")
@click.option("--skip-invalid", is_flag=True, help="Build from the accepted runs even when some are rejected.")
@_TASKS_DIR
def build(submissions: Path, out: Path, skip_invalid: bool, tasks_dir: Path | None) -> None:
    """Validate the submissions and render the static site (open OUT/index.html, or serve OUT anywhere).

    The site has one sortable, filterable table per task, plots, a page per run, CSV/JSON downloads
    and a how-to-submit page; it loads nothing from the network.

    \b
    Example:
      editprobe leaderboard build --submissions leaderboard/submissions --out build/site
    """
    from editprobe.leaderboard.site import SiteError
    from editprobe.leaderboard.site import build as build_site

    if not submissions.is_dir():
        raise click.ClickException(f"{submissions}: no such submissions folder")
    click.echo(f"validating {submissions} ...")
    try:
        report, pages = build_site(submissions, out, skip_invalid=skip_invalid, tasks_dir=tasks_dir)
    except SiteError as exc:
        raise click.ClickException(str(exc)) from None
    _print_report(report)
    if report.rejected and not skip_invalid:
        raise click.ClickException(f"{len(report.rejected)} run(s) rejected; site not written "
                                   "(fix them, or pass --skip-invalid to build from the accepted runs)")
    click.echo(f"wrote {len(pages)} pages from {len(report.accepted)} run(s) to {out}/index.html")
