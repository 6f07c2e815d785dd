"""CLI of the benchmark: ``editprobe run``, ``editprobe merge``, ``editprobe tasks``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from editprobe.options import cache_dir_option, data_dir_option, dtype_option, model_option, out_option


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
@click.option("--task", "task", required=True, help="Task name (see `editprobe tasks list`) or a task YAML path.")
@click.option("--editor", "editor", required=True,
              help="Editor: a name from `editprobe editors list`, easyedit:<ALG>, or package.module:Class.")
@click.option("--hparams", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Hyper-parameter YAML (checked before anything loads).")
@click.option("--preset", default=None,
              help="A shipped preset (`editprobe editors list`), or `defaults`; default: the model's entry in "
                   "tasks/hparams/models.yaml, and an error when it has none.")
@model_option()
@dtype_option()
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when present), cpu, cuda, cuda:1, ...")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Score only the first N records.")
@click.option("--dataset", "dataset_path", default=None, help="Override the task's dataset path (folder or hub id).")
@click.option("--num-shards", type=click.IntRange(min=1), default=None,
              help="Split the records into N shards (default: from torchrun WORLD_SIZE or a Slurm array, else 1).")
@click.option("--shard-index", type=click.IntRange(min=0), default=None)
@click.option("--edit-batch", type=click.IntRange(min=1), default=None,
              help="Single mode: measure N records' edits in one batch (each row sees only its record's edit); "
                   "default per device (cpu 1, cuda 16).")
@click.option("--target-batch", type=click.IntRange(min=1), default=None,
              help="ROME, MEMIT, AlphaEdit: optimise the target vectors of N edits in one batch where a step edits "
                   "several records (--edit-batch > 1, batch mode); each as if alone, equal up to float rounding; "
                   "default per device (cpu 1, cuda 16).")
@click.option("--free-answers", type=click.IntRange(min=0), default=0, show_default=True, metavar="N",
              help="Also record greedy answers of up to N tokens to the edit prompt and two neighbourhood (locality) "
                   "prompts, before and after the edit, for `editprobe judge` (0: none).")
@cache_dir_option("model copy, pre-edit passes, editor statistics")
@out_option(help="Run folder: results.json and samples.jsonl (a rerun resumes it).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def run(task, editor, hparams, preset, model, dtype, device, limit, dataset_path, num_shards, shard_index, edit_batch,
        target_batch, free_answers, cache_dir, out, quiet):
    """Score an editor on a model against a task; writes results.json and samples.jsonl.

    Rerunning the same command after an interruption continues where it stopped. Bad input (task file, editor
    name, hyper-parameter names and values, edit mode) fails in seconds, before the model loads. Exits non-zero
    when no record scored or more failed than the leaderboard accepts; the results file is written either way.

    \b
    Example:
      editprobe run --task zsre --editor ft --limit 3 --out runs/ft-zsre
    """
    from editprobe.benchmark.runner import RunConfig, run as run_benchmark, shard_from_environment
    from editprobe.formats import MAX_FAILED_SHARE

    if num_shards is None:
        num_shards, env_index = shard_from_environment(dict(os.environ)) or (1, 0)
        shard_index = env_index if shard_index is None else shard_index
    shard_index = shard_index or 0
    if shard_index >= num_shards:
        raise click.BadParameter(f"shard index {shard_index} is not below the shard count {num_shards}")
    cfg = RunConfig(task=task, editor=editor, output_dir=out, model=model, hparams=hparams, preset=preset, dtype=dtype,
                    device=device, limit=limit, num_shards=num_shards, shard_index=shard_index,
                    dataset_path=dataset_path, cache_dir=cache_dir, edit_batch=edit_batch,
                    target_batch=target_batch, free_answers=free_answers)
    try:
        doc = run_benchmark(cfg, progress=not quiet)
    except (ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    c = doc["counts"]
    click.echo(summary_table([(f"{editor} / {doc['provenance']['task']['name']}", doc)]))
    click.echo(f"{c['ok']} scored, {c['failed']} failed -> {out}/results.json")
    if c["ok"] == 0 or c["failed"] > MAX_FAILED_SHARE * c["records"]:
        raise click.ClickException(f"{c['failed']} of {c['records']} records failed (more than "
                                   f"{MAX_FAILED_SHARE:.0%}); see the errors in {out}/samples.jsonl")


@click.command()
@click.argument("shard_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@out_option(help="Folder of the merged results.json and samples.jsonl.")
@click.option("--task", "task_file", default=None, help="Task file, when the shards ran one outside tasks/.")
def merge(shard_dirs, out, task_file):
    """Merge shard outputs of one run into a single results file.

    \b
    Example:
      editprobe merge runs/ft-0 runs/ft-1 --out runs/ft
    """
    from editprobe.benchmark.runner import merge as merge_shards

    try:
        doc = merge_shards(list(shard_dirs), out, task_file)
    except (ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"merged {len(shard_dirs)} shards, {doc['counts']['records']} records -> {out}/results.json")


@click.group()
def tasks():
    """List, show and validate benchmark tasks (tasks/*.yaml)."""


@tasks.command("list")
def tasks_list():
    """One line per task: name, version, config, hash."""
    from editprobe.benchmark.tasks import load_task, task_files

    found = [load_task(path) for path in task_files()]
    width = max(len(t.name) for t in found)
    for t in found:
        click.echo(f"{t.name:<{width}}  v{t.version}  {t.dataset_config:<17} {t.hash[:12]}  "
                   f"{t.uncertainty.max_new_tokens:>3} tokens  {t.description}")


@tasks.command("show")
@click.argument("name")
def tasks_show(name):
    """Print a task's resolved content and hash as JSON."""
    from editprobe.benchmark.tasks import load_task

    try:
        t = load_task(name)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps({"hash": t.hash, **t.spec}, indent=2))


@tasks.command("validate")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def tasks_validate(paths):
    """Validate task files against schemas/task.schema.json (all tasks when no path is given)."""
    from editprobe.benchmark.tasks import load_task, task_files

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
    """The README's results table: standard metrics, U, ΔU by both estimands with CIs, the median per-record ΔU,
    ΔU split by generative adoption, seconds per edit; a ``null`` run's ΔU is restated under the table as the
    sampling-noise floor."""
    out = ["| run | n | Edit Succ. | Generalization | Locality | U_pre | U_post | ΔU ratio of means (95% CI) "
           "| ΔU mean of ratios (95% CI) | ΔU median | ΔU adopted (n) | ΔU not adopted (n) | s/edit |",
           "|---|--:|--:|--:|--:|--:|--:|---|---|--:|---|---|--:|"]
    floors = []
    for name, doc in rows:
        m, u = doc["metrics"], doc["uncertainty"]["U"]
        split = doc.get("breakdowns", {}).get("adoption", {})
        cells = [f"{_pct(split[g]['delta_u'])} ({split[g]['n']})" if g in split else "–"
                 for g in ("adopted", "not_adopted")]
        edit_s = doc.get("timings", {}).get("mean_edit_seconds")
        median = u.get("delta_u_median") or {}
        median = "–" if median.get("value") is None else f"{median['value'] * 100:+.1f}%"
        out.append(f"| {name} | {u['n']} | {_fmt(m['reliability'])} | {_fmt(m.get('generalization'))} "
                   f"| {_fmt(m['locality'])} | {_fmt(u['u_pre'])} | {_fmt(u['u_post'])} | {_pct(u['delta_u'])} "
                   f"| {_pct(u.get('delta_u_mean'))} | {median} "
                   f"| {cells[0]} | {cells[1]} | {'–' if edit_s is None else f'{edit_s:.1f}'} |")
        if doc.get("provenance", {}).get("editor", {}).get("name") == "null":
            floors.append(f"Sampling-noise floor ({name}): ΔU {_pct(u['delta_u'])}, mean of ratios "
                          f"{_pct(u.get('delta_u_mean'))}.")
    return "\n".join(out + ([""] + floors if floors else []))


@click.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--markdown", is_flag=True,
              help="A Markdown table with generalization, ΔU split by generative adoption and seconds per edit.")
@click.option("--sequential", "sequential_plot", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Sequential runs: print each run's trajectory as a Markdown table and draw the ΔU curves to "
                   "this SVG file.")
def compare(run_dirs, markdown, sequential_plot):
    """Print Edit Succ., Locality, U_pre, U_post and ΔU (95% CI) of finished runs side by side.

    \b
    Example:
      editprobe compare runs/noop runs/ft
      editprobe compare --markdown runs/*
      editprobe compare --sequential curves.svg runs/rome-seq runs/memit-seq
    """
    rows = []
    for d in run_dirs:
        path = d / "results.json"
        if not path.exists():
            raise click.ClickException(f"{path}: no results file (has the run finished?)")
        doc = json.loads(path.read_text())
        rows.append((f"{doc['provenance']['editor']['name']} / {doc['provenance']['task']['name']}", doc))
    if sequential_plot is None:
        click.echo(markdown_table(rows) if markdown else summary_table(rows))
        return
    from editprobe.leaderboard.plots import sequential_curves

    missing = [name for name, doc in rows if "sequential" not in doc]
    if missing:
        raise click.ClickException(f"not sequential runs: {', '.join(missing)}")
    for name, doc in rows:
        click.echo(f"{name}\n\n{trajectory_table(doc['sequential'])}\n")
    model = rows[0][1]["provenance"]["model"]["id"]
    sequential_curves([{"label": name.split(" / ")[0], "sequential": doc["sequential"]} for name, doc in rows],
                      sequential_plot, f"Sequential edits on {model}")
    click.echo(f"curves -> {sequential_plot}")


def trajectory_table(seq: dict) -> str:
    """A sequential run's panel steps as Markdown: edits applied, ‖W_t − W_0‖, ΔU of the earlier-edited panel
    records (95% CI), their Edit Success now, ΔU and locality of the never-edited records."""
    out = ["| edits | ‖W_t − W_0‖ | ΔU earlier edits (n) | Edit Succ. retained | ΔU never edited (n) | Locality |",
           "|--:|--:|--:|--:|--:|--:|"]
    for p in seq["panels"]:
        e, u = p["edited"], p["untouched"]
        out.append(f"| {p['step']} | {p['weight_change']:.3f} | {_fmt(e['delta_u'], pct=True)} ({e['n']}) | "
                   f"{_fmt(e['reliability'])} | {_fmt(u['delta_u'], pct=True)} ({u['n']}) | {_fmt(u['locality'])} |")
    return "\n".join(out)


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
@model_option()
@click.option("--preset", default=None, help="The editors' preset; default: the model's entry in tasks/hparams/models.yaml.")
@click.option("--device", default="auto", show_default=True)
@data_dir_option()
@cache_dir_option("model copy, context templates, covariance stats")
@out_option(default=Path("build/diagnostics"), help="Folder of <name>.json and <name>.png.")
def diagnose(name, list_, ci, limit, model, preset, device, data_dir, cache_dir, out):
    """Run a least-squares editing diagnostic; writes <out>/<name>.json and <out>/<name>.png.

    \b
    Examples:
      editprobe diagnose --list
      editprobe diagnose right_vector_norms --ci
      editprobe diagnose layer_sweep --limit 10 --out build/diagnostics
    """
    from editprobe.benchmark import diagnostics as D
    from editprobe.paths import default_data_dir

    if list_ or not name:
        for n in D.available():
            _, spec = D.load_spec(n)
            click.echo(f"{n:<20} {spec.get('description', '')}")
        return
    try:
        doc = D.run_diagnostic(name, out, model_id=model, device=device, data_dir=data_dir or default_data_dir(),
                               cache_dir=cache_dir, ci=ci, limit=limit, preset=preset)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(_table(doc.get("summary") or doc["rows"]))
    for extra in ("final",):
        if doc.get(extra):
            click.echo()
            click.echo(_table(doc[extra]))
    click.echo(f"\n{doc['seconds']:.0f} s; wrote {out / (doc['diagnostic'] + '.json')} and .png")


@click.group()
def train() -> None:
    """Train editors that learn (MEND's hypernetwork) on a training split, never an evaluation set."""


@train.command("mend")
@model_option()
@dtype_option()
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when present), cpu, cuda, ...")
@click.option("--hparams", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="MEND hyper-parameter YAML (checked before anything loads).")
@click.option("--preset", default=None, help="A shipped mend preset, or `defaults`; default: the model's entry in "
                                             "tasks/hparams/models.yaml.")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Optimiser updates (overrides train_steps; each update sees `accumulate` training edits).")
@data_dir_option()
@cache_dir_option("model copy")
@out_option(help="Folder of mend.pt and hparams.yaml (a rerun after an interruption resumes from partial.pt there).")
@click.option("--quiet", is_flag=True, help="No progress lines.")
def train_mend(model, dtype, device, hparams, preset, steps, data_dir, cache_dir, out, quiet):
    """Train MEND's networks for a model; `editprobe run --editor mend --hparams OUT/hparams.yaml` then uses them.

    \b
    Example:
      editprobe train mend --steps 100 --out build/mend-smollm2
    """
    import dataclasses

    import yaml

    from editprobe.benchmark.editors import build_editor, choose_hparams
    from editprobe.benchmark.editors.mend import train as train_networks
    from editprobe.models import load_model
    from editprobe.paths import resolve_data_ref

    try:
        choice = choose_hparams("mend", model, hparams_file=hparams, preset=preset)
        editor = build_editor("mend", choice.hparams_file, choice.preset, cache_dir=cache_dir)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    hp = editor.hparams
    if steps is not None:
        hp = dataclasses.replace(hp, train_steps=steps)
    data = resolve_data_ref(hp.train_data, data_dir)
    hp = dataclasses.replace(hp, train_data=str(data))
    if not data.is_file():
        raise click.ClickException(f"{data}: MEND's training split is missing (set --data-dir or train_data)")
    lm, tokenizer, info = load_model(model, dtype=dtype, device=device, cache_dir=cache_dir)
    try:
        path = train_networks(lm, tokenizer, hp, out, progress=None if quiet else lambda line: click.echo(line, err=True))
    except (ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    settings = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(hp).items()}
    settings["checkpoint"] = str(out.resolve())
    (out / "hparams.yaml").write_text(f"# MEND networks trained for {info.id} by `editprobe train mend`\n"
                                      + yaml.safe_dump(settings, sort_keys=False), encoding="utf-8")
    click.echo(f"wrote {path}; use it with: editprobe run --editor mend --hparams {out / 'hparams.yaml'} "
               f"--model {model} ...")


@click.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--base-url", default=None,
              help="An OpenAI-compatible endpoint (…/v1): score the free answers with its chat model.")
@click.option("--judge-model", default=None, help="The judge's model name at --base-url.")
@click.option("--api-key-env", default="OPENAI_API_KEY", show_default=True,
              help="Environment variable holding the key (read at call time, never written).")
@click.option("--export-csv", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the items as a CSV for annotators (and the rubric beside it).")
@click.option("--import-csv", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Read an annotated CSV (needs --annotator and --who).")
@click.option("--annotator", default=None, help="Name the imported scores are kept under.")
@click.option("--who", default=None, help="Who the annotator is, in words (kept with every score).")
@click.option("--agreement", "agreement_of", multiple=True, metavar="SOURCE",
              help="Print how two score sources agree (give it twice): llm:<model>, human:<annotator>.")
@click.option("--dataset", "dataset_path", default=None,
              help="Where the run's dataset is now, if not at the path its results file names (checked by fingerprint).")
def judge(run_dir, base_url, judge_model, api_key_env, export_csv, import_csv, annotator, who, agreement_of,
          dataset_path):
    """Score a run's free answers on the 0-5 rubric (seed Table 2), by an LLM judge or by annotators.

    The run must have recorded them (`editprobe run ... --free-answers 48`): per record, greedy answers to the edit
    prompt (S1) and to two locality prompts (S2, S3), before and after the edit. Judge scores are cached in
    RUN_DIR/judge/ and a rerun sends only what is missing.

    \b
    Examples:
      OPENAI_API_KEY=... editprobe judge runs/rome --base-url http://localhost:8000/v1 --judge-model my-judge
      editprobe judge runs/rome --export-csv annotate.csv
      editprobe judge runs/rome --import-csv done.csv --annotator a1 --who "annotator one (a person)"
      editprobe judge runs/rome --agreement human:a1 --agreement human:a2
    """
    from editprobe.benchmark import judge as J

    did = False
    try:
        records = J.run_records(run_dir, dataset_path) if (export_csv or import_csv or base_url or judge_model
                                                           or any(s.startswith("llm:") for s in agreement_of)) else None
        if export_csv:
            n = J.export_csv(run_dir, export_csv, records)
            click.echo(f"{export_csv}: {n} items to score; rubric in {export_csv.with_suffix('.rubric.txt')}")
            did = True
        if import_csv:
            if not annotator or not who:
                raise click.UsageError("--import-csv needs --annotator NAME and --who \"...\"")
            n = J.import_csv(run_dir, import_csv, annotator, who, records)
            click.echo(f"{J.human_scores_path(run_dir, annotator)}: {n} scores from {import_csv}")
            did = True
        if base_url or judge_model:
            if not (base_url and judge_model):
                raise click.UsageError("an LLM judge needs both --base-url and --judge-model")
            client = J.ChatClient(base_url, judge_model, api_key_env=api_key_env)
            report = J.judge_run(run_dir, client, base_url, records=records)
            click.echo(f"{report['path']}: {report['scored']} scored, {report['cached']} cached, "
                       f"{len(report['failed'])} failed of {report['items']} items")
            for line in report["failed"][:10]:
                click.echo(f"  failed: {line}", err=True)
            if report["failed"]:
                raise SystemExit(1)
            did = True
        if agreement_of:
            if len(agreement_of) != 2:
                raise click.UsageError("--agreement takes exactly two sources")
            a, b = (J.read_scores(run_dir, s, records) for s in agreement_of)
            res = J.agreement(a, b)
            click.echo(f"{agreement_of[0]} vs {agreement_of[1]}: " + ", ".join(
                f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in res.items()))
            did = True
    except (ValueError, FileNotFoundError, J.JudgeError) as exc:
        raise click.ClickException(str(exc)) from None
    if not did:
        raise click.UsageError("nothing to do: give --base-url/--judge-model, --export-csv, --import-csv or --agreement")


@click.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--scores", "source", default="human", show_default=True,
              help="Score source: human (mean over annotators), human:<annotator> or llm:<model>.")
@click.option("--figure", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Draw ΔU against the judged degradation (.svg or .png).")
@click.option("--slots", default="S1,S2,S3", show_default=True,
              help="Slots whose pre-minus-post scores make the degradation (S2,S3: neighbourhood queries only).")
@click.option("--title", default="ΔU against judged degradation", show_default=True)
@click.option("--bootstrap", type=click.IntRange(min=100), default=2000, show_default=True)
@click.option("--dataset", "dataset_path", default=None,
              help="llm scores: where the runs' dataset is now, if not where their results files say.")
@out_option(required=False, file_okay=True, help="Write the numbers as JSON.")
def calibrate(run_dirs, source, slots, figure, title, bootstrap, dataset_path, out):
    """Correlate ΔU with the judged degradation (pre minus post rubric score), per record and per run.

    Each RUN_DIR is one editor's run with free answers scored by `editprobe judge`. Prints Spearman's rho and
    Pearson's r over records and Spearman's rho over runs, each with a 95% bootstrap interval.
    """
    import json as _json

    from editprobe.benchmark import calibrate as C

    try:
        from editprobe.benchmark.judge import run_records

        chosen = tuple(x.strip() for x in slots.split(",") if x.strip())
        runs = [C.run_points(d, source, run_records(d, dataset_path) if source.startswith("llm:") else None, chosen)
                for d in run_dirs]
    except (ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    result = C.calibrate(runs, bootstrap=bootstrap)
    result["scores"], result["slots"] = source, list(chosen)
    fmt = lambda ci: "[n/a]" if ci[0] is None else f"[{ci[0]:+.2f}, {ci[1]:+.2f}]"  # noqa: E731
    for r in result["runs"]:
        click.echo(f"{r['label']:<28} records {r['records']:>4}  ΔU {100 * r['delta_u']:+6.1f}%  "
                   f"degradation {r['degradation']:+.2f}")
    rec = result["per_record"]
    click.echo(f"per record (n = {rec['records']}): Spearman {rec['spearman']:+.3f} {fmt(rec['spearman_ci'])}, "
               f"Pearson {rec['pearson']:+.3f} {fmt(rec['pearson_ci'])}")
    per_run = result["per_run"]
    if per_run["spearman"] is None:
        click.echo(f"per run: {per_run['note']}")
    else:
        click.echo(f"per run (n = {per_run['runs']}): Spearman {per_run['spearman']:+.3f} {fmt(per_run['spearman_ci'])}")
    if figure:
        C.draw(runs, result, figure, title)
        click.echo(f"figure: {figure}")
    if out:
        Path(out).write_text(_json.dumps(result, indent=2, allow_nan=True) + "\n", encoding="utf-8")
        click.echo(f"numbers: {out}")
