"""CLI of the dataset builder: ``editprobe convert`` and ``editprobe build``."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import click

from editprobe.formats import CONFIGS
from editprobe.options import cache_dir_option, data_dir_option, out_option


@click.command()
@click.argument("source_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@out_option(file_okay=True, help="Where to write the canonical records (JSON Lines).")
@click.option("--format", "fmt", default=None,
              help="Source format (see `editprobe formats list`); detected from the records when omitted.")
def convert(source_file: Path, out: Path, fmt: str | None) -> None:
    """Convert a real editing-benchmark file into canonical source records.

    Every record that cannot be read gets one error line (file, record index, field) on stderr; the
    rest of the file is still converted. Exits 1 only when nothing could be converted.

    \b
    Example:
      editprobe convert ../shared/data/knowedit/zsre_test.json --out build/zsre.records.jsonl
    """
    from editprobe.dataset_builder.sources import FORMATS, SourceFileError, convert_file
    from editprobe.registry import RegistryError

    try:
        if fmt is not None:
            FORMATS.get(fmt)
    except RegistryError as exc:
        raise click.BadParameter(str(exc), param_hint="--format") from None
    try:
        result = convert_file(source_file, fmt)
    except (SourceFileError, OSError, UnicodeDecodeError) as exc:
        raise click.ClickException(str(exc)) from None
    for error in result.errors:
        click.echo(f"error: {error}", err=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as fh:
        for record in result.records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    click.echo(f"{result.summary()} -> {out}")
    if not result.records:
        sys.exit(1)


@click.command()
@click.option("--recipe", default=None,
              help="Build every config of a recipe into one dataset: a recipe YAML path, or `release` for the "
                   "packaged recipe of the released set.")
@click.option("--source", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="One source file (KnowEdit / MEND / EasyEdit JSON) to build one config from.")
@click.option("--config", "config", type=click.Choice(CONFIGS), default=None, help="The config --source feeds.")
@out_option(help="Dataset folder to write (configs as JSONL, README.md card, build_report.json).")
@data_dir_option()
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N records of each source.")
@click.option("--configs", "only_configs", default=None, metavar="A,B",
              help="With --recipe: build only these of its configs (comma-separated) [default: all].")
@click.option("--seed", type=int, default=None, help="Seed of sampled regenerations [default: 0].")
@click.option("--scheme", default=None, help="Six-level paraphrase scheme, a name of tasks/schemes/ or a YAML path "
                                             "[default: llama2].")
@click.option("--paraphrases-from", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Import paraphrases (and wiki newquestions, hand-checked topics) from a JSONL file, by record id.")
@click.option("--topics", type=click.Choice(["llm", "embedding", "both"]), default=None,
              help="Topic classifier(s); overrides a recipe's [default: both, or the recipe's].")
@click.option("--target-model", default=None,
              help="Local model stating subject_knowledge (wiki configs); overrides a recipe's "
                   "[default: the bundled SmolLM2].")
@click.option("--backend", default=None,
              help="LLM backend for paraphrases, newquestions and LLM topics (see `editprobe backends list`) "
                   "[default: openai].")
@click.option("--llm-model", default=None,
              help="Model of the LLM backend [default: gpt-4o-mini for openai, the bundled SmolLM2 for transformers].")
@click.option("--base-url", default=None, help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1.")
@click.option("--api-key-env", default=None,
              help="Environment variable holding the API key [default: OPENAI_API_KEY]; the key is never written.")
@click.option("--temperature", type=float, default=None, help="Sampling temperature of first attempts [default: 0].")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Concurrent API calls [default: 4].")
@click.option("--timeout", type=float, default=None, help="Seconds before an API call is retried [default: 60].")
@click.option("--max-retries", type=click.IntRange(min=0), default=None,
              help="Retries of a call on 429/5xx/timeouts, with exponential backoff [default: 5].")
@click.option("--retry-base-delay", type=float, default=None, help="First backoff delay in seconds [default: 1].")
@click.option("--max-tokens", type=click.IntRange(min=1), default=None,
              help="Cap on every generator call's token limit (cheap smoke builds) [default: each prompt's own].")
@click.option("--max-attempts", type=click.IntRange(min=1), default=None,
              help="Generation rounds per record before it is kept out [default: 3].")
@cache_dir_option("local model copies; LLM calls under llm/")
@click.option("--llm-cache", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder of the writable LLM call cache [default: <cache-dir>/llm]. A recipe's own committed "
                   "cache is read first and never written.")
@click.option("--push-to-hub", "push_repo", default=None, metavar="REPO",
              help="Upload the dataset folder to this Hugging Face dataset repository (needs HF_TOKEN).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def build(recipe, source, config, out, data_dir, limit, only_configs, seed, scheme, paraphrases_from, topics, target_model,
          backend, llm_model, base_url, api_key_env, temperature, workers, timeout, max_retries,
          retry_base_delay, max_tokens, max_attempts, cache_dir, llm_cache, push_repo, quiet) -> None:
    """Build the perturbation set: paraphrases, subject_knowledge, newquestions and topics, gated.

    Either one source (--source + --config) or a whole recipe (--recipe). Every LLM call is cached
    on disk, so a killed build restarts where it stopped and an identical rebuild makes no call.
    Prints and writes build_report.json (records kept / excluded with reasons, gates per level,
    LLM calls / cache hits / tokens / failures, topic agreement).

    \b
    Examples:
      editprobe build --recipe release --out build/perturbations
      OPENAI_API_KEY=... editprobe build --source ../shared/data/knowedit/zsre_test.json \\
          --config zsre --limit 40 --out build/zsre --llm-model gpt-4o-mini
    """
    import os

    from editprobe.dataset_builder.build import (BuildError, BuildSettings, ConfigPlan, build as run_build,
                                                 format_report, load_recipe, with_overrides)
    from editprobe.dataset_builder.gates import load_scheme
    from editprobe.paths import default_cache_dir, default_data_dir

    if (recipe is None) == (source is None):
        raise click.UsageError("give either --recipe or --source (with --config)")
    try:
        if recipe is not None:
            loaded = load_recipe(recipe, data_dir or default_data_dir())
            overrides = {k: v for k, v in {"limit": limit, "topics": topics, "target_model": target_model}.items()
                         if v is not None}
            plans = [dataclasses.replace(p, **overrides) for p in loaded.plans]
            if only_configs:
                wanted = [c.strip() for c in only_configs.split(",") if c.strip()]
                unknown = [c for c in wanted if c not in {p.config for p in plans}]
                if unknown:
                    raise click.UsageError(f"--configs: the recipe has no config {', '.join(unknown)} "
                                           f"(it has {', '.join(p.config for p in plans)})")
                plans = [p for p in plans if p.config in wanted]
            settings = loaded.settings
            if paraphrases_from is not None:
                raise click.UsageError("--paraphrases-from goes with --source; a recipe names its own files")
        elif only_configs:
            raise click.UsageError("--configs goes with --recipe")
        else:
            if config is None:
                raise click.UsageError("--source needs --config (zsre, wiki_recent or wiki_counterfact)")
            plans = [ConfigPlan(config, source, limit, paraphrases_from, None, topics or "both", target_model)]
            settings = BuildSettings()
        cache_root = cache_dir or default_cache_dir()
        settings = with_overrides(settings, scheme=scheme, seed=seed, max_attempts=max_attempts,
                                  cache_dir=llm_cache or cache_root / "llm", model_cache_dir=cache_root,
                                  show_progress=not quiet, llm__backend=backend, llm__model=llm_model,
                                  llm__base_url=base_url, llm__api_key_env=api_key_env,
                                  llm__temperature=temperature, llm__workers=workers, llm__timeout=timeout,
                                  llm__max_retries=max_retries, llm__retry_base_delay=retry_base_delay,
                                  llm__max_tokens=max_tokens)
        settings.llm.backend_class()            # an unknown backend or scheme fails here, before any work
        try:
            load_scheme(settings.scheme)
        except ValueError as exc:
            raise BuildError(str(exc)) from None
        # The key is read here, once, and handed to the backend; it is never written anywhere.
        api_key = os.environ.get(settings.llm.api_key_env) or None
        report = run_build(plans, settings, out, api_key=api_key)
    except BuildError as exc:
        raise click.ClickException(str(exc)) from None
    from editprobe.dataset_builder.build import REPORT_FILE

    click.echo(format_report(report))
    click.echo(f"-> {out} (report: {out / REPORT_FILE})")
    if push_repo:
        from editprobe.dataset_builder.hf_dataset import push_to_hub

        click.echo(f"pushed: {push_to_hub(out, push_repo)}")


@click.command("check-paraphrases")
@click.argument("paraphrase_files", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--config", "config", type=click.Choice(CONFIGS), default=None,
              help="The config the files are for [default: from each file name, `<config>.*.jsonl`].")
@click.option("--source", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="The source file of their records [default: the released recipe's source of the config].")
@data_dir_option()
@click.option("--scheme", default=None, help="Six-level scheme to gate against [default: the config's, "
                                             "llama3 for `*_llama3` configs, else llama2].")
@click.option("--quiet", is_flag=True, help="Only the summary lines.")
def check_paraphrases(paraphrase_files: tuple[Path, ...], config: str | None, source: Path | None, data_dir,
                      scheme, quiet) -> None:
    """Gate hand-written paraphrase files before a build: one line per failing paraphrase, with its metrics.

    Runs the build's own gates (scheme thresholds, subject kept verbatim, levels distinct, the wiki
    configs' newquestion rule and the question fingerprint); exits 1 when any line fails.

    \b
    Example:
      editprobe check-paraphrases zsre.mine.jsonl zsre_llama3.mine.jsonl
    """
    from editprobe.dataset_builder.build import BuildError, load_recipe
    from editprobe.dataset_builder.check import check_paraphrase_file
    from editprobe.embeddings import Embedder
    from editprobe.formats import CONFIG_SCHEMES, base_config
    from editprobe.paths import default_data_dir

    jobs = []
    for path in paraphrase_files:  # everything is resolved before the embedder loads
        cfg = config or path.name.split(".", 1)[0]
        if cfg not in CONFIGS:
            raise click.UsageError(f"{path}: cannot tell its config from the name; give --config "
                                   f"({', '.join(CONFIGS)})")
        src = source
        if src is None:
            try:
                recipe = load_recipe("release", data_dir or default_data_dir())
            except BuildError as exc:
                raise click.ClickException(str(exc)) from None
            src = next((p.source for p in recipe.plans if p.config == base_config(cfg)), None)
            if src is None:
                raise click.UsageError(f"the released recipe has no config {base_config(cfg)!r}: give --source")
        jobs.append((path, cfg, src, scheme or CONFIG_SCHEMES[cfg]))
    embedder = Embedder()
    failed = False
    for path, cfg, src, sch in jobs:
        try:
            result = check_paraphrase_file(path, cfg, src, scheme=sch, embedder=embedder)
        except (BuildError, ValueError) as exc:
            raise click.ClickException(str(exc)) from None
        if not quiet:
            for problem in result.problems:
                click.echo(problem.format())
        if result.unknown_ids:
            click.echo(f"{path}: {len(result.unknown_ids)} id(s) not in {src}: "
                       + ", ".join(result.unknown_ids[:5]) + (" ..." if len(result.unknown_ids) > 5 else ""))
        click.echo(f"{path}: {result.passed}/{result.checked} lines pass the {sch} gates "
                   f"({len(result.problems)} problem(s))" + (f"; {result.left_out} left out by the writer"
                                                            if result.left_out else ""))
        failed = failed or bool(result.problems or result.unknown_ids)
    if failed:
        sys.exit(1)
