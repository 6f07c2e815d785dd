"""The ``editprobe`` command: one click group; each pipeline contributes its subcommands, and every kind of
plug-in has ``editprobe <kind> list``."""

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
      train mend         train MEND's hypernetwork on CounterFact's training split
      diagnose           least-squares editing diagnostics (norms, KL ablation, null space, tracing)
      tasks              list, show, validate benchmark tasks
      submit / leaderboard   file runs; validate submissions, build the static site
    Plug-ins (each: `editprobe <kind> list`):
      editors, estimators, diagnostics, formats, backends
    """


#: ``editprobe <kind> list``: the registry behind each kind of plug-in (lazy "module:attr" targets).
PLUGIN_KINDS = {
    "editors": ("editprobe.benchmark.editors:EDITORS", "Model editors for `editprobe run --editor`."),
    "estimators": ("editprobe.benchmark.uncertainty:ESTIMATORS", "Uncertainty estimators of a task's scores."),
    "diagnostics": ("editprobe.benchmark.diagnostics:KINDS", "Kinds of diagnostic a tasks/diagnostics spec runs."),
    "formats": ("editprobe.dataset_builder.sources:FORMATS", "Source formats `editprobe convert` reads."),
    "backends": ("editprobe.dataset_builder.llm:BACKENDS", "LLM backends of `editprobe build --backend`."),
}


def _summary(obj) -> str:
    """A plug-in's first docstring paragraph on one line: its own (a class or function), else its module's; an
    object's ``description``."""
    import sys

    if not isinstance(obj, type) and not callable(obj):
        doc = getattr(obj, "description", "")
    else:
        doc = obj.__dict__.get("__doc__") if isinstance(obj, type) else obj.__doc__
        doc = doc or getattr(sys.modules.get(obj.__module__), "__doc__", "")
    doc = (doc or "").strip()
    first = doc.split("\n\n")[0] if doc else ""  # the first paragraph, however the docstring wraps it
    return " ".join(line.strip() for line in first.splitlines())


def _details(kind: str, name: str, obj) -> str:
    """One extra fact per kind that a user picks by: an editor's presets, a kind's shipped specs, a format's config."""
    if kind == "editors":
        from editprobe.benchmark.editors import presets

        found = presets(getattr(obj, "name", name))
        return f"presets: {', '.join(found)}" if found else "no presets"
    if kind == "diagnostics":
        from editprobe.benchmark.diagnostics import available, load_spec

        specs = [n for n in available() if load_spec(n)[1].get("diagnostic") == name]
        return f"specs: {', '.join(specs)}" if specs else ""
    if kind == "formats":
        return f"feeds config {obj.config}"
    return ""


def _plugin_group(kind: str, target: str, help_text: str) -> click.Group:
    @click.group(kind, help=help_text)
    def group() -> None:
        pass

    @group.command("list")
    def list_() -> None:
        """One line per registered name: name, where it comes from, what it is."""
        from editprobe.registry import import_target

        registry = import_target(target)
        entries = registry.entries()
        width = max(len(e.name) for e in entries)
        for entry in entries:
            if entry.origin == "built-in prefix":
                click.echo(f"{entry.name:<{width}}  {entry.origin:<16} {entry.target}")
                continue
            obj = registry.get(entry.name)
            extra = _details(kind, entry.name, obj)
            click.echo(f"{entry.name:<{width}}  {entry.origin:<16} {_summary(obj)}" + (f"  [{extra}]" if extra else ""))

    return group


def _register() -> None:
    from editprobe.benchmark.cli import calibrate, compare, diagnose, judge, merge, run, tasks, train
    from editprobe.dataset_builder.cli import build, check_paraphrases, convert
    from editprobe.leaderboard.cli import leaderboard, submit

    for command in (convert, build, check_paraphrases, run, merge, compare, tasks, train, diagnose, judge, calibrate,
                    submit, leaderboard):
        main.add_command(command)
    for kind, (target, help_text) in PLUGIN_KINDS.items():
        main.add_command(_plugin_group(kind, target, help_text))


_register()


if __name__ == "__main__":
    main()
