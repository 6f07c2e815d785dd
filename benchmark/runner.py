"""The runner: pre-edit pass (cached), edit, post-edit pass, restore — one record at a time, resumable.

Outputs, in ``output_dir``:
* ``samples.jsonl`` — one line per record as it finishes (every response, per-record statistics);
  a rerun after a crash skips the ids already there, so no record is lost or duplicated;
* ``results.json`` — provenance, aggregates with CIs and breakdowns, validated against
  ``schemas/results.schema.json``; always recomputed from ``samples.jsonl`` (see :func:`aggregate`).

The pre-edit pass depends only on (model, task hash, dataset fingerprint, seed), so it is cached on
disk per record and shared by every editor run on the same task.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from editprobe.benchmark import metrics as M
from editprobe.benchmark.editors import EditRequest, HparamsChoice, RestoreError, build_editor, choose_hparams
from editprobe.benchmark.sampling import SAMPLER_VERSION, effective_settings, pinned_config, sample_responses
from editprobe.benchmark.tasks import Task, load_task
from editprobe.benchmark.uncertainty import (aleatoric_uncertainty, breakdown, epistemic_uncertainty, level_uncertainty,
                                             summarize_delta, total_uncertainty)
from editprobe import __version__, git_hash
from editprobe.formats import validate
from editprobe.models import DEFAULT_MODEL, DTYPES

log = logging.getLogger("editprobe.run")
#: Edit modes this runner measures (the others are declared by tasks and editors, and refused before loading).
RUNNABLE_MODES = ("single",)
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class RunConfig:
    task: str
    editor: str
    output_dir: Path
    model: str = DEFAULT_MODEL
    hparams: Path | None = None
    preset: str | None = None          # a shipped preset name, "defaults", or None: the model table
    dtype: str = DTYPES[0]
    device: str = "auto"
    limit: int | None = None
    num_shards: int = 1
    shard_index: int = 0
    dataset_path: str | None = None
    cache_dir: Path | None = None


def shard_from_environment(env: dict[str, str]) -> tuple[int, int] | None:
    """(num_shards, shard_index) from torchrun (WORLD_SIZE/RANK) or a Slurm array, when present."""
    if "WORLD_SIZE" in env and "RANK" in env:
        return int(env["WORLD_SIZE"]), int(env["RANK"])
    if "SLURM_ARRAY_TASK_COUNT" in env and "SLURM_ARRAY_TASK_ID" in env:
        first = int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
        return int(env["SLURM_ARRAY_TASK_COUNT"]), int(env["SLURM_ARRAY_TASK_ID"]) - first
    return None


# --------------------------------------------------------------------------- data

def load_records(task: Task, dataset_path: str | None = None) -> tuple[list[dict], str]:
    """Records of the task's config/split (topics as names) and the dataset fingerprint."""
    from datasets import load_dataset

    path = dataset_path or task.resolved_dataset_path()
    ds = load_dataset(path, task.dataset_config, split=task.dataset_split, revision=task.dataset_revision)
    topic = ds.features["topic"]
    rows = []
    for row in ds:
        row = dict(row)
        row["topic"] = topic.int2str(row["topic"]) if row["topic"] is not None and row["topic"] >= 0 else None
        rows.append(row)
    return rows, ds._fingerprint


def select(records: list[dict], limit: int | None, num_shards: int, shard_index: int) -> list[tuple[int, dict]]:
    """The first ``limit`` records, then every num_shards-th starting at shard_index (with dataset positions)."""
    chosen = list(enumerate(records[:limit] if limit else records))
    return [(i, r) for i, r in chosen if i % num_shards == shard_index]


# --------------------------------------------------------------------------- measuring one state

def paraphrases(record: dict, task: Task) -> tuple[list[str], list[int]]:
    levels = list(task.uncertainty.levels)
    by_level = {g["level"]: g["rephrase"] for g in record["generated_questions"]}
    return [by_level[lvl] for lvl in levels], levels


def measure(model, tokenizer, record: dict, task: Task, embedder, editor=None, request=None) -> dict:
    """Sampled responses, their uncertainty, and the teacher-forced probes in the model's current state.
    With an editor (the post-edit pass) the prompts are the editor's and so is the sampling seed."""
    wrap = (lambda p: editor.wrap_prompt(p, request)) if editor is not None else (lambda p: p)
    seed = editor.sampling_seed(task.seed) if editor is not None else task.seed
    questions, levels = paraphrases(record, task)
    responses = sample_responses(model, tokenizer, [wrap(q) for q in questions], record["id"], levels,
                                 task.uncertainty, seed)
    m, k = len(questions), task.uncertainty.samples_per_paraphrase
    H = embedder.encode([r for row in responses for r in row]).reshape(m, k, -1)
    dist = task.uncertainty.distance
    alt = record["alt"]
    probes = {"reliability": [(record["prompt"], alt)]}
    if "rephrase" in task.metrics["edit_success"] and record.get("rephrase"):
        probes["generalization"] = [(record["rephrase"], alt)]
    probes["portability"] = [(p["prompt"], p["answers"][0]) for p in record["portability"]
                             if not task.metrics["portability"] or p["kind"] in task.metrics["portability"]]
    locality = [(p["prompt"], p["answers"][0]) for p in record["locality"]
                if not task.metrics["locality"] or p["kind"] in task.metrics["locality"]]
    out = {
        "responses": responses,
        "U": total_uncertainty(H, dist), "U_alea": aleatoric_uncertainty(H, dist),
        "U_epis": epistemic_uncertainty(H, dist), "U_level": level_uncertainty(H, dist).tolist(),
        "adoption": M.adoption_rates([r for row in responses for r in row], [alt], record["answer_aliases"]),
        "fluency": M.ngram_entropy([r for row in responses for r in row]),
    }
    for name, pairs in probes.items():
        out[name] = (M.edit_accuracy(model, tokenizer, [wrap(p) for p, _ in pairs], [t for _, t in pairs])
                     if pairs else [])
    out["locality_argmax"] = (M.teacher_forced_argmax(model, tokenizer, [wrap(p) for p, _ in locality],
                                                      [t for _, t in locality]) if locality else [])
    return out


class PreEditCache:
    """Per-record pre-edit measurements on disk, keyed by everything they depend on."""

    def __init__(self, root: Path, key_parts: dict):
        key = hashlib.sha256(json.dumps(key_parts, sort_keys=True).encode()).hexdigest()[:24]
        self.dir = Path(root) / "pre_edit" / key
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "key.json").write_text(json.dumps(key_parts, indent=1, sort_keys=True))
        self.hits = self.misses = 0

    def _path(self, record_id: str) -> Path:
        return self.dir / f"{record_id}.json"

    def get(self, record_id: str) -> dict | None:
        path = self._path(record_id)
        if path.exists():
            self.hits += 1
            return json.loads(path.read_text())
        self.misses += 1
        return None

    def put(self, record_id: str, value: dict) -> None:
        tmp = self._path(record_id).with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(value))
        tmp.replace(self._path(record_id))


# --------------------------------------------------------------------------- one record

def score_record(model, tokenizer, record: dict, position: int, task: Task, editor, embedder,
                 pre_cache: PreEditCache) -> dict:
    t0 = time.perf_counter()
    pre = pre_cache.get(record["id"])
    if pre is None:
        pre = measure(model, tokenizer, record, task, embedder)
        pre_cache.put(record["id"], pre)
    t1 = time.perf_counter()
    request = EditRequest(record["id"], record["prompt"], record["subject"], record["alt"], record["answer"])
    line = {"id": record["id"], "position": position, "topic": record["topic"]}
    handle = None
    try:
        handle = editor.apply(model, tokenizer, [request])
        t2 = time.perf_counter()
        post = measure(model, tokenizer, record, task, embedder, editor, request)
    except RestoreError:
        raise
    except Exception as exc:  # an editor failure on one record is logged and the run goes on
        if handle is not None:
            handle.restore()
        log.error("record %s: %s: %s", record["id"], type(exc).__name__, exc)
        return {**line, "status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    handle.restore()
    t3 = time.perf_counter()
    post["locality"] = M.locality_agreement(pre["locality_argmax"], post.pop("locality_argmax"))
    return {**line, "status": "ok", "pre": pre, "post": post,
            "edit": {"diagnostics": _jsonable(handle.diagnostics), "touched": handle.touched},
            "seconds": {"pre": t1 - t0, "edit": t2 - t1, "post": t3 - t2}}


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


# --------------------------------------------------------------------------- aggregation

def _mean_ci(values: list[float], n_boot: int, seed: int = BOOTSTRAP_SEED) -> dict:
    x = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if x.size == 0:
        return {"value": None, "ci_low": None, "ci_high": None}
    idx = np.random.default_rng(seed).integers(0, x.size, size=(n_boot, x.size))
    boot = x[idx].mean(axis=1)
    return {"value": float(x.mean()), "ci_low": float(np.quantile(boot, 0.025)),
            "ci_high": float(np.quantile(boot, 0.975))}


def _record_mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def aggregate(lines: list[dict], task: Task) -> dict:
    """Aggregates, breakdowns and counts from samples.jsonl lines (ordered by dataset position)."""
    ok = [x for x in sorted(lines, key=lambda x: x["position"]) if x["status"] == "ok"]
    nb, floor = task.uncertainty.bootstrap, task.uncertainty.delta_floor
    kw = {"floor": floor, "n_boot": nb, "seed": BOOTSTRAP_SEED}

    def arr(state, key):
        return np.asarray([x[state][key] for x in ok], dtype=np.float64)

    metrics = {name: _mean_ci([_record_mean(x["post"][name]) for x in ok], nb)
               for name in ("reliability", "generalization", "portability", "locality")}
    metrics["fluency"] = _mean_ci([x["post"]["fluency"] for x in ok], nb)
    uncertainty = {key: summarize_delta(arr("pre", key), arr("post", key), **kw) for key in ("U", "U_alea", "U_epis")}
    adoption = {f"{kind}_{state}": _mean_ci([x[state]["adoption"][kind] for x in ok], nb)
                for kind in ("new", "old") for state in ("pre", "post")}
    levels = task.uncertainty.levels
    by_level = {str(lvl): summarize_delta(np.asarray([x["pre"]["U_level"][j] for x in ok]),
                                          np.asarray([x["post"]["U_level"][j] for x in ok]), **kw)
                for j, lvl in enumerate(levels)}
    adopted = ["adopted" if x["post"]["adoption"]["new"] > 0 else "not_adopted" for x in ok]
    return {
        "metrics": metrics, "uncertainty": uncertainty, "adoption": adoption,
        "breakdowns": {"topic": breakdown(arr("pre", "U"), arr("post", "U"), [str(x["topic"]) for x in ok], **kw),
                       "level": by_level,
                       "adoption": breakdown(arr("pre", "U"), arr("post", "U"), adopted, **kw)},
        "counts": {"records": len(lines), "ok": len(ok), "failed": len(lines) - len(ok)},
    }


def results_document(lines: list[dict], task: Task, provenance: dict, timings: dict) -> dict:
    doc = {"schema_version": 1, "provenance": provenance, **aggregate(lines, task), "timings": timings,
           "protocols": M.PROTOCOLS}
    doc = _jsonable(doc)
    validate(doc, "results", "results.json")
    return doc


# --------------------------------------------------------------------------- files

def read_samples(path: Path) -> list[dict]:
    """Lines of a samples.jsonl; a torn last line (killed mid-write) is dropped so the record reruns."""
    if not path.exists():
        return []
    lines = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        try:
            lines.append(json.loads(raw))
        except json.JSONDecodeError:
            log.warning("%s: ignoring a torn line (the record will be scored again)", path)
    return lines


def _rewrite_clean(path: Path, lines: list[dict]) -> None:
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8")
    tmp.replace(path)


def _claim_output_dir(out: Path, identity: dict) -> None:
    """Resuming is only safe into a folder holding the same run: refuse to mix two runs' records."""
    path = out / "run.json"
    if path.exists():
        previous = json.loads(path.read_text())
        if previous != identity:
            changed = sorted(k for k in identity if previous.get(k) != identity[k])
            raise ValueError(f"{out} holds a different run ({', '.join(changed)} changed); "
                             "choose another --output-dir or delete it")
        return
    write_json(path, identity)


def write_json(path: Path, doc: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)


# --------------------------------------------------------------------------- the run

@dataclass(frozen=True)
class Prepared:
    """What a run is, checked before any data or model loads: the task, the editor with checked
    hyper-parameters, and where those came from."""

    task: Task
    editor: object
    choice: HparamsChoice


def prepare(cfg: RunConfig) -> Prepared:
    """Validate everything that needs neither data nor a model, so bad input costs seconds, not a model load:
    the task file (schema, YAML), the editor name, the hyper-parameter source (file, preset or the model table),
    every hyper-parameter's name, type, choice and range, and the edit mode. Raises ValueError with one line
    naming the file and field."""
    from editprobe.paths import default_cache_dir

    overrides = {"path": cfg.dataset_path} if cfg.dataset_path else None
    task = load_task(cfg.task, overrides)
    choice = choose_hparams(cfg.editor, cfg.model, hparams_file=cfg.hparams, preset=cfg.preset)
    editor = build_editor(cfg.editor, choice.hparams_file, choice.preset, cache_dir=cfg.cache_dir or default_cache_dir())
    if task.edit_mode not in editor.modes:
        raise ValueError(f"{task.source}: field 'edit_mode': editor {cfg.editor!r} does not support "
                         f"{task.edit_mode!r} (supports: {', '.join(editor.modes)})")
    if task.edit_mode not in RUNNABLE_MODES:
        raise ValueError(f"{task.source}: field 'edit_mode': {task.edit_mode!r} is not run by this version "
                         f"(runs: {', '.join(RUNNABLE_MODES)})")
    return Prepared(task, editor, choice)


def pre_edit_key(task: Task, fingerprint: str, info, model) -> dict:
    """Everything the pre-edit pass depends on: reuse it only when each of these is the same."""
    import torch
    import transformers

    return {"model": info.id, "revision": info.revision, "dtype": info.dtype,
            "dtype_used": str(next(model.parameters()).dtype).removeprefix("torch."), "device": info.device,
            "task_hash": task.hash, "dataset": fingerprint, "seed": task.seed, "sampler_version": SAMPLER_VERSION,
            "torch": torch.__version__, "transformers": transformers.__version__}


def run(cfg: RunConfig, progress: bool = True) -> dict:
    from tqdm.auto import tqdm

    from editprobe.embeddings import Embedder
    from editprobe.models import load_model
    from editprobe.paths import default_cache_dir

    started = time.perf_counter()
    prepared = prepare(cfg)
    task, editor = prepared.task, prepared.editor
    records, fingerprint = load_records(task)
    chosen = select(records, cfg.limit, cfg.num_shards, cfg.shard_index)
    model, tokenizer, info = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device, cache_dir=cfg.cache_dir)
    embedder = Embedder(task.uncertainty.embedding_model, device=info.device)
    pre_cache = PreEditCache(cfg.cache_dir or default_cache_dir(), pre_edit_key(task, fingerprint, info, model))
    setup_seconds = time.perf_counter() - started

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    _claim_output_dir(out, {"task_hash": task.hash, "dataset": fingerprint, "model": info.as_dict(),
                            "editor": cfg.editor, "hparams": _jsonable(editor.hparams_dict())})
    samples_path = out / "samples.jsonl"
    previous = read_samples(samples_path)
    done = {x["id"] for x in previous}
    _rewrite_clean(samples_path, list({x["id"]: x for x in previous}.values()))
    todo = [(i, r) for i, r in chosen if r["id"] not in done]
    with open(samples_path, "a", encoding="utf-8") as fh:
        bar = tqdm(todo, desc=f"{cfg.editor} on {task.name}", unit="record", disable=not progress)
        for position, record in bar:
            line = score_record(model, tokenizer, record, position, task, editor, embedder, pre_cache)
            fh.write(json.dumps(line, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    wanted = {r["id"] for _, r in chosen}
    lines = [x for x in read_samples(samples_path) if x["id"] in wanted]
    provenance = {
        "package_version": __version__, "git_hash": git_hash(),
        "task": {"name": task.name, "version": task.version, "hash": task.hash},
        "dataset": {"path": cfg.dataset_path or task.dataset_path, "config": task.dataset_config,
                    "split": task.dataset_split, "revision": task.dataset_revision, "fingerprint": fingerprint},
        "model": info.as_dict(),
        "editor": {"name": cfg.editor, "hparams": editor.hparams_dict(), "preset": prepared.choice.preset,
                   "hparams_file": prepared.choice.hparams_file},
        "generation": effective_settings(pinned_config(model, tokenizer, task.uncertainty.max_new_tokens),
                                         task.uncertainty),
        "seeds": {"task_seed": task.seed, "bootstrap_seed": BOOTSTRAP_SEED}, "device": info.device,
        "limit": cfg.limit,
        "shard": {"index": cfg.shard_index, "count": cfg.num_shards} if cfg.num_shards > 1 else None,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    ok = [x for x in lines if x["status"] == "ok"]
    timings = {"total_seconds": time.perf_counter() - started, "setup_seconds": setup_seconds,
               "pre_cache_hits": float(pre_cache.hits), "pre_cache_misses": float(pre_cache.misses)}
    for key in ("pre", "edit", "post"):
        timings[f"mean_{key}_seconds"] = float(np.mean([x["seconds"][key] for x in ok])) if ok else 0.0
    doc = results_document(lines, task, provenance, timings)
    write_json(out / "results.json", doc)
    return doc


def merge(shard_dirs: list[Path], output_dir: Path, task_file: str | None = None) -> dict:
    """Combine shard outputs into one results file, equal to an unsharded run's (timings aside).

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
    _rewrite_clean(out / "samples.jsonl", lines)
    doc = results_document(lines, task, provenance, timings)
    write_json(out / "results.json", doc)
    return doc
