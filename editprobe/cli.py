"""The ``editprobe`` command: one click group; each pipeline contributes its subcommands."""

from __future__ import annotations

import click

from editprobe import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="editprobe")
def main() -> None:
    """editprobe: measure how much a model edit raises a language model's uncertainty.

    \b
    Pipelines:
      convert / build    real editing benchmarks -> the six-level perturbation set (HF dataset)
      run / merge        score an editor on a model: standard metrics, U before/after, ΔU
      compare            side-by-side table of finished runs
      diagnose           least-squares editing diagnostics (norms, KL ablation, null space, tracing)
      tasks              list, show, validate benchmark tasks
      submit / leaderboard   file runs; validate submissions, build the static site
    """


def _register() -> None:
    from benchmark.cli import compare, diagnose, merge, run, tasks
    from dataset_builder.cli import build, convert
    from leaderboard.cli import leaderboard, submit

    for command in (convert, build, run, merge, compare, tasks, diagnose, submit, leaderboard):
        main.add_command(command)


_register()


if __name__ == "__main__":
    main()
