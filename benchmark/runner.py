"""The runner: loads the data, the model and the embedder once, then runs the task's edit mode, resumably.

Outputs, in ``output_dir``:
* ``samples.jsonl`` — one line per finished unit as it finishes (single mode: a record; sequential mode: an edit
  step or a panel measurement), every response and per-record statistic; a rerun after a crash skips what is
  there, so nothing is lost or duplicated;
* ``results.json`` — provenance, aggregates with CIs and breakdowns, validated against
  ``schemas/results.schema.json``; always recomputed from ``samples.jsonl`` (``editprobe.benchmark.aggregate``).

The phases live in their own modules: ``config`` (what a run is, checked before anything loads), ``measure`` (one
model state on one record), ``modes`` (single, sequential), ``storage`` (files, the pre-edit cache) and
``aggregate`` (torch-free numbers shared with ``merge``). The pre-edit pass depends only on (model, task hash,
dataset fingerprint, seed, sampler), so it is cached on disk per record and shared by every editor run on the task.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import time
from pathlib import Path

import numpy as np

from editprobe import __version__, git_hash
from editprobe.benchmark.aggregate import BOOTSTRAP_SEED, results_document
from editprobe.benchmark.config import (RUNNABLE_MODES, Prepared, RunConfig, edit_batch_for, target_batch_for,  # noqa: F401
                                        load_records, prepare, select, shard_from_environment)
from editprobe.benchmark.storage import (PreEditCache, append_line, claim_output_dir, jsonable, read_samples,
                                         rewrite_clean, write_json)
from editprobe.benchmark.tasks import load_task


def pre_edit_key(task, fingerprint: str, info, model) -> dict:
    from editprobe.benchmark.measure import pre_edit_key as key

    return key(task, fingerprint, info, model)


def score_record(*args, **kwargs) -> dict:
    from editprobe.benchmark.modes import score_record as score

    return score(*args, **kwargs)


def run(cfg: RunConfig, progress: bool = True) -> dict:
    from tqdm.auto import tqdm

    from editprobe.benchmark.measure import pre_edit_key as key
    from editprobe.benchmark.modes import (batches_of, run_batches, run_sequential, score_record as score,
                                           score_records)
    from editprobe.benchmark.sampling import effective_settings, pinned_config, prompt_format
    from editprobe.embeddings import Embedder
    from editprobe.models import load_model
    from editprobe.paths import default_cache_dir

    started = time.perf_counter()
    prepared = prepare(cfg)
    task, editor = prepared.task, prepared.editor
    if cfg.free_answers:   # the task itself is unchanged (same hash); the free answers are an addition to each pass
        task = dataclasses.replace(task, free_answers=cfg.free_answers)
    records, fingerprint = load_records(task)
    chosen = select(records, cfg.limit, cfg.num_shards, cfg.shard_index)
    batches = []
    if task.edit_mode == "batch":   # whole batches per shard, formed before the split
        batches = list(enumerate(batches_of(select(records, cfg.limit, 1, 0), task.batch_size)))
        batches = [b for b in batches if b[0] % cfg.num_shards == cfg.shard_index]
        chosen = [m for _, members in batches for m in members]
    untouched = []
    if task.edit_mode == "sequential":
        first = len(chosen)
        untouched = list(enumerate(records))[first:first + task.sequential.panel_untouched]
        if len(untouched) < task.sequential.panel_untouched:
            raise ValueError(f"{task.source}: field 'sequential.panel_untouched': {task.sequential.panel_untouched} "
                             f"records must follow the {first} edited ones, the split has {len(records) - first}")
    model, tokenizer, info = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device, cache_dir=cfg.cache_dir)
    embedder = Embedder(task.uncertainty.embedding_model, device=info.device)
    if hasattr(editor, "target_batch"):   # target vectors of one multi-edit call, optimised this many at a time
        editor.target_batch = target_batch_for(cfg, info.device)
    pre_cache = PreEditCache(cfg.cache_dir or default_cache_dir(), key(task, fingerprint, info, model))
    setup_seconds = time.perf_counter() - started

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    identity = {"task_hash": task.hash, "dataset": fingerprint, "model": info.as_dict(), "editor": cfg.editor,
                "hparams": jsonable(editor.hparams_dict())}
    if task.edit_mode == "sequential":
        identity["limit"] = cfg.limit      # a different chain length is a different chain
    if task.free_answers:
        identity["free_answers"] = task.free_answers
    claim_output_dir(out, identity)
    samples_path = out / "samples.jsonl"
    previous = read_samples(samples_path)
    previous = list({_unit_key(x): x for x in previous}.values())
    rewrite_clean(samples_path, previous)
    with open(samples_path, "a", encoding="utf-8") as fh:
        if task.edit_mode == "sequential":
            run_sequential(model, tokenizer, chosen, untouched, task, editor, embedder, pre_cache,
                           prepared.estimators, previous, fh, progress)
        elif task.edit_mode == "batch":
            run_batches(model, tokenizer, batches, task, editor, embedder, pre_cache, prepared.estimators,
                        {x["id"] for x in previous}, fh, progress)
        else:
            done = {x["id"] for x in previous}
            todo = [(i, r) for i, r in chosen if r["id"] not in done]
            size = edit_batch_for(cfg, info.device) if editor.row_batchable else 1
            bar = tqdm(total=len(todo), desc=f"{cfg.editor} on {task.name}", unit="record", disable=not progress)
            for start in range(0, len(todo), size):
                chunk = todo[start:start + size]
                if size == 1:
                    lines = [score(model, tokenizer, chunk[0][1], chunk[0][0], task, editor, embedder, pre_cache,
                                   prepared.estimators)]
                else:
                    lines = score_records(model, tokenizer, chunk, task, editor, embedder, pre_cache,
                                          prepared.estimators)
                for line in lines:
                    append_line(fh, line)
                bar.update(len(chunk))
            bar.close()
    wanted = {r["id"] for _, r in chosen}
    lines = [x for x in read_samples(samples_path) if x.get("kind") == "panel" or x["id"] in wanted]
    provenance = {
        "package_version": __version__, "git_hash": git_hash(),
        "task": {"name": task.name, "version": task.version, "hash": task.hash},
        "dataset": {"path": cfg.dataset_path or task.dataset_path, "config": task.dataset_config,
                    "split": task.dataset_split, "revision": task.dataset_revision, "fingerprint": fingerprint},
        "model": info.as_dict(),
        "editor": {"name": cfg.editor, "hparams": editor.hparams_dict(), "preset": prepared.choice.preset,
                   "hparams_file": prepared.choice.hparams_file},
        "generation": {**effective_settings(pinned_config(model, tokenizer, task.uncertainty.max_new_tokens),
                                            task.uncertainty), "prompt_format": prompt_format(tokenizer, task.uncertainty)},
        "seeds": {"task_seed": task.seed, "bootstrap_seed": BOOTSTRAP_SEED}, "device": info.device,
        "limit": cfg.limit, "edit_batch": edit_batch_for(cfg, info.device) if editor.row_batchable else 1,
        "target_batch": getattr(editor, "target_batch", 1),
        **({"free_answers": {"max_new_tokens": task.free_answers, "decoding": "greedy",
                             "slots": "S1 edit prompt; S2, S3 the record's first two locality prompts"}}
           if task.free_answers else {}),
        "shard": {"index": cfg.shard_index, "count": cfg.num_shards} if cfg.num_shards > 1 else None,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    ok = [x for x in lines if x.get("kind", "record") != "panel" and x["status"] == "ok"]
    timings = {"total_seconds": time.perf_counter() - started, "setup_seconds": setup_seconds,
               "pre_cache_hits": float(pre_cache.hits), "pre_cache_misses": float(pre_cache.misses)}
    for part in ("pre", "edit", "post"):
        timings[f"mean_{part}_seconds"] = float(np.mean([x["seconds"][part] for x in ok])) if ok else 0.0
    doc = results_document(lines, task, provenance, timings)
    write_json(out / "results.json", doc)
    return doc


def _unit_key(line: dict) -> tuple:
    """What one samples.jsonl line stands for: a record, or a sequential run's edit step or panel."""
    kind = line.get("kind", "record")
    return (kind, line.get("step")) if kind in ("edit", "panel") else (kind, line["id"])


def merge(shard_dirs: list[Path], output_dir: Path, task_file: str | None = None) -> dict:
    """Combine shard outputs into one results file, equal to an unsharded run's (timings aside); needs no torch.

    ``task_file`` names the task when it is not one of tasks/*.yaml (its hash must match the shards').
    """
    docs = [json.loads((Path(d) / "results.json").read_text()) for d in shard_dirs]
    first = docs[0]["provenance"]
    for d, doc in zip(shard_dirs, docs):
        p = doc["provenance"]
        for key in ("task", "dataset", "model", "editor", "seeds", "limit"):
            if p[key] != first[key]:
                raise ValueError(f"{d}/results.json: provenance.{key} differs from {shard_dirs[0]}; "
                                 "only shards of one run can be merged")
    by_id: dict[str, dict] = {}
    for d in shard_dirs:
        for x in read_samples(Path(d) / "samples.jsonl"):
            if x.get("kind") in ("edit", "panel"):
                raise ValueError(f"{d}/samples.jsonl: a sequential run is one chain, never sharded: nothing to merge")
            by_id.setdefault(x["id"], x)
    lines = sorted(by_id.values(), key=lambda x: x["position"])
    task = load_task(task_file or first["task"]["name"], {"path": first["dataset"]["path"]})
    if task.hash != first["task"]["hash"]:
        raise ValueError(f"task {task.name}: the shards were run with hash {first['task']['hash'][:12]}, "
                         f"the task file now hashes to {task.hash[:12]}")
    provenance = {**first, "shard": None}
    timings = {"total_seconds": float(sum(doc["timings"]["total_seconds"] for doc in docs))}
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    rewrite_clean(out / "samples.jsonl", lines)
    doc = results_document(lines, task, provenance, timings)
    write_json(out / "results.json", doc)
    return doc
