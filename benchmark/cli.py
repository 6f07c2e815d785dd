"""CLI of the benchmark: ``editprobe run``, ``editprobe merge``, ``editprobe tasks``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click


def _fmt(est: dict | None, pct: bool = False) -> str:
    if not est or est.get("value") is None:
        return "–"
    scale, unit = (100.0, "%") if pct else (1.0, "")
    return f"{est['value'] * scale:+.1f}{unit} [{est['ci_low'] * scale:+.1f}, {est['ci_high'] * scale:+.1f}]" if pct \
        else f"{est['value']:.3f}"


def summary_table(rows: list[tuple[str, dict]]) -> str:
    """A small text table: Edit Succ., Locality, U_pre, U_post, ΔU with its CI, per results document."""
    head = f"{'run':<28} {'EditSucc':>8} {'Locality':>8} {'U_pre':>7} {'U_post':>7}  ΔU (95% CI)"
    out = [head, "-" * len(head)]
    for name, doc in rows:
        u = doc["uncertainty"]["U"]
        out.append(f"{name:<28} {_fmt(doc['metrics']['reliability']):>8} {_fmt(doc['metrics']['locality']):>8} "
                   f"{_fmt(u['u_pre']):>7} {_fmt(u['u_post']):>7}  {_fmt(u['delta_u'], pct=True)}")
    return "\n".join(out)


@click.command()
@click.option("--task", "task", required=True, help="Task name (tasks/<name>.yaml) or a task YAML path.")
@click.option("--editor", "editor", required=True,
              help="Editor: a built-in name (noop, ft, kn, ike, ...), easyedit:<ALG>, an entry point of group editprobe.editors, or package.module:Class.")
@click.option("--hparams", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Hyper-parameter YAML; default: tasks/hparams/<editor>/<model family>.yaml when present.")
@click.option("--model", default="smollm2-135m-instruct", show_default=True,
              help="Hub id or local folder of a causal LM; the default is the embedded SmolLM2-135M-Instruct.")
@click.option("--dtype", type=click.Choice(["float32", "float16", "bfloat16"]), default="float32", show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when present), cpu, cuda, cuda:1, ...")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Score only the first N records.")
@click.option("--dataset", "dataset_path", default=None, help="Override the task's dataset path (folder or hub id).")
@click.option("--num-shards", type=click.IntRange(min=1), default=None,
              help="Split the records into N shards (default: from torchrun WORLD_SIZE or a Slurm array, else 1).")
@click.option("--shard-index", type=click.IntRange(min=0), default=None)
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None, envvar="EDITPROBE_CACHE",
              help="Model copy and pre-edit cache (default ~/.cache/editprobe).")
@click.option("--output-dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--quiet", is_flag=True, help="No progress bar.")
def run(task, editor, hparams, model, dtype, device, limit, dataset_path, num_shards, shard_index, cache_dir,
        output_dir, quiet):
    """Score an editor on a model against a task; writes results.json and samples.jsonl.

    Rerunning the same command after an interruption continues where it stopped.

    \b
    Example:
      editprobe run --task zsre --editor ft --limit 3 --output-dir runs/ft-zsre
    """
    from benchmark.runner import RunConfig, run as run_benchmark, shard_from_environment

    if num_shards is None:
        num_shards, env_index = shard_from_environment(dict(os.environ)) or (1, 0)
        shard_index = env_index if shard_index is None else shard_index
    shard_index = shard_index or 0
    if shard_index >= num_shards:
        raise click.BadParameter(f"shard index {shard_index} is not below the shard count {num_shards}")
    cfg = RunConfig(task=task, editor=editor, output_dir=output_dir, model=model, hparams=hparams, dtype=dtype,
                    device=device, limit=limit, num_shards=num_shards, shard_index=shard_index,
                    dataset_path=dataset_path, cache_dir=cache_dir)
    try:
        doc = run_benchmark(cfg, progress=not quiet)
    except (ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    c = doc["counts"]
    click.echo(summary_table([(f"{editor} / {doc['provenance']['task']['name']}", doc)]))
    click.echo(f"{c['ok']} scored, {c['failed']} failed -> {output_dir}/results.json")


@click.command()
@click.argument("shard_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--output-dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--task", "task_file", default=None, help="Task file, when the shards ran one outside tasks/.")
def merge(shard_dirs, output_dir, task_file):
    """Merge shard outputs of one run into a single results file.

    \b
    Example:
      editprobe merge runs/ft-0 runs/ft-1 --output-dir runs/ft
    """
    from benchmark.runner import merge as merge_shards

    try:
        doc = merge_shards(list(shard_dirs), output_dir, task_file)
    except (ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"merged {len(shard_dirs)} shards, {doc['counts']['records']} records -> {output_dir}/results.json")


@click.group()
def tasks():
    """List, show and validate benchmark tasks (tasks/*.yaml)."""


@tasks.command("list")
def tasks_list():
    """One line per task: name, version, config, hash."""
    from benchmark.tasks import load_task, task_files

    for path in task_files():
        t = load_task(path)
        click.echo(f"{t.name:<18} v{t.version}  {t.dataset_config:<17} {t.hash[:12]}  {t.description}")


@tasks.command("show")
@click.argument("name")
def tasks_show(name):
    """Print a task's resolved content and hash as JSON."""
    from benchmark.tasks import load_task

    try:
        t = load_task(name)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps({"hash": t.hash, **t.spec}, indent=2))


@tasks.command("validate")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def tasks_validate(paths):
    """Validate task files against schemas/task.schema.json (all tasks when no path is given)."""
    from benchmark.tasks import load_task, task_files

    bad = 0
    for path in paths or task_files():
        try:
            load_task(path)
            click.echo(f"ok      {path}")
        except ValueError as exc:
            bad += 1
            click.echo(f"invalid {exc}", err=True)
    if bad:
        raise SystemExit(1)


def _pct(est: dict | None) -> str:
    if not est or est.get("value") is None:
        return "–"
    return f"{est['value'] * 100:+.1f}% [{est['ci_low'] * 100:+.1f}, {est['ci_high'] * 100:+.1f}]"


def markdown_table(rows: list[tuple[str, dict]]) -> str:
    """The README's results table: standard metrics, U, ΔU with its CI, ΔU split by generative adoption."""
    out = ["| run | n | Edit Succ. | Generalization | Locality | U_pre | U_post | ΔU (95% CI) "
           "| ΔU adopted (n) | ΔU not adopted (n) | s/edit |",
           "|---|--:|--:|--:|--:|--:|--:|---|---|---|--:|"]
    for name, doc in rows:
        m, u = doc["metrics"], doc["uncertainty"]["U"]
        split = doc.get("breakdowns", {}).get("adoption", {})
        cells = [f"{_pct(split[g]['delta_u'])} ({split[g]['n']})" if g in split else "–"
                 for g in ("adopted", "not_adopted")]
        edit_s = doc.get("timings", {}).get("mean_edit_seconds")
        out.append(f"| {name} | {u['n']} | {_fmt(m['reliability'])} | {_fmt(m.get('generalization'))} "
                   f"| {_fmt(m['locality'])} | {_fmt(u['u_pre'])} | {_fmt(u['u_post'])} | {_pct(u['delta_u'])} "
                   f"| {cells[0]} | {cells[1]} | {'–' if edit_s is None else f'{edit_s:.1f}'} |")
    return "\n".join(out)


@click.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--markdown", is_flag=True,
              help="A Markdown table with generalization, ΔU split by generative adoption and seconds per edit.")
def compare(run_dirs, markdown):
    """Print Edit Succ., Locality, U_pre, U_post and ΔU (95% CI) of finished runs side by side.

    \b
    Example:
      editprobe compare runs/noop runs/ft
      editprobe compare --markdown runs/*
    """
    rows = []
    for d in run_dirs:
        path = d / "results.json"
        if not path.exists():
            raise click.ClickException(f"{path}: no results file (has the run finished?)")
        doc = json.loads(path.read_text())
        rows.append((f"{doc['provenance']['editor']['name']} / {doc['provenance']['task']['name']}", doc))
    click.echo(markdown_table(rows) if markdown else summary_table(rows))


def _table(rows: list[dict]) -> str:
    """Rows of a diagnostic as aligned text (lists and dicts left out)."""
    if not rows:
        return "(no rows)"
    cols = [k for k, v in rows[0].items() if not isinstance(v, (list, dict))]
    cell = lambda v: f"{v:.4g}" if isinstance(v, float) else ("–" if v is None else str(v))  # noqa: E731
    widths = {c: max(len(c), *(len(cell(r.get(c))) for r in rows)) for c in cols}
    lines = ["  ".join(c.rjust(widths[c]) for c in cols)]
    lines += ["  ".join(cell(r.get(c)).rjust(widths[c]) for c in cols) for r in rows]
    return "\n".join(lines)


@click.command()
@click.argument("name", required=False)
@click.option("--list", "list_", is_flag=True, help="List the diagnostics under tasks/diagnostics/.")
@click.option("--ci", is_flag=True, help="Use the file's CI-sized settings (a few records, short optimisation).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Use only the first N records.")
@click.option("--model", default="smollm2-135m-instruct", show_default=True, help="Hub id or local folder of a causal LM.")
@click.option("--device", default="auto", show_default=True)
@click.option("--data-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Source-data folder (default: $EDITPROBE_DATA, else ../shared/data).")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None, envvar="EDITPROBE_CACHE",
              help="Model copy, context templates, covariance stats (default ~/.cache/editprobe).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("build/diagnostics"),
              show_default=True)
def diagnose(name, list_, ci, limit, model, device, data_dir, cache_dir, out_dir):
    """Run a least-squares editing diagnostic; writes <out>/<name>.json and <out>/<name>.png.

    \b
    Examples:
      editprobe diagnose --list
      editprobe diagnose right_vector_norms --ci
      editprobe diagnose layer_sweep --limit 10 --out build/diagnostics
    """
    from benchmark import diagnostics as D
    from editprobe.paths import default_data_dir

    if list_ or not name:
        for n in D.available():
            _, spec = D.load_spec(n)
            click.echo(f"{n:<20} {spec.get('description', '')}")
        return
    try:
        doc = D.run_diagnostic(name, out_dir, model_id=model, device=device, data_dir=data_dir or default_data_dir(),
                               cache_dir=cache_dir, ci=ci, limit=limit)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(_table(doc.get("summary") or doc["rows"]))
    for extra in ("final",):
        if doc.get(extra):
            click.echo()
            click.echo(_table(doc[extra]))
    click.echo(f"\n{doc['seconds']:.0f} s; wrote {out_dir / (doc['diagnostic'] + '.json')} and .png")
