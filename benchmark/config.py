"""What a run is: its configuration, the records it scores, and the checks that need neither data nor a model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING

from editprobe.benchmark.tasks import Task, load_task
from editprobe.models import DEFAULT_MODEL, DTYPES

if TYPE_CHECKING:
    from editprobe.benchmark.editors import HparamsChoice

#: Edit modes this runner measures.
RUNNABLE_MODES = ("single", "sequential", "batch")


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
    edit_batch: int | None = None      # records measured per batch in single mode; None: EDIT_BATCH[device type]
    target_batch: int | None = None    # ROME/MEMIT/AlphaEdit target vectors optimised together; None: TARGET_BATCH[...]
    free_answers: int = 0              # also record greedy free answers (S1-S3, pre and post) of up to N tokens


#: Records whose single edits are measured in one batch, per device type. CPU: 1, measured on the 2-core box
#: (one record's 30 rows take 13.3 s; 4 records in one call 12.1 s a record, 8 records 15.4 s: already
#: compute-bound). CUDA: 16, the batch the issue's GPU target names; not yet measured on a lent GPU.
EDIT_BATCH = {"cpu": 1, "cuda": 16}


def edit_batch_for(cfg: RunConfig, device: str) -> int:
    return cfg.edit_batch or EDIT_BATCH.get(device.split(":")[0], 1)


#: Target vectors (ROME's v*, MEMIT's and AlphaEdit's z*) optimised in one batch where a step edits several
#: records (single mode with an edit batch, batch mode), per device type. CPU: 1, the reference's one after
#: another (``benchmarks/ls_edit_speed.py --targets`` measures the batched optimisation there); CUDA: 16.
TARGET_BATCH = {"cpu": 1, "cuda": 16}


def target_batch_for(cfg: RunConfig, device: str) -> int:
    return cfg.target_batch or TARGET_BATCH.get(device.split(":")[0], 1)


@dataclass(frozen=True)
class Prepared:
    """What a run is, checked before any data or model loads: the task, the editor with checked
    hyper-parameters, where those came from, and the task's estimators."""

    task: Task
    editor: object
    choice: HparamsChoice
    estimators: dict


def prepare(cfg: RunConfig) -> Prepared:
    """Validate everything that needs neither data nor a model, so bad input costs seconds, not a model load:
    the task file (schema, YAML, estimators), the editor name, the hyper-parameter source (file, preset or the model
    table), every hyper-parameter's name, type, choice and range, and the edit mode. Raises ValueError with one line
    naming the file and field."""
    from editprobe.benchmark.editors import build_editor, choose_hparams
    from editprobe.benchmark.measure import task_estimators
    from editprobe.paths import default_cache_dir

    overrides = {"path": cfg.dataset_path} if cfg.dataset_path else None
    task = load_task(cfg.task, overrides)
    estimators = task_estimators(task)
    choice = choose_hparams(cfg.editor, cfg.model, hparams_file=cfg.hparams, preset=cfg.preset)
    editor = build_editor(cfg.editor, choice.hparams_file, choice.preset, cache_dir=cfg.cache_dir or default_cache_dir())
    if task.edit_mode not in editor.modes:
        raise ValueError(f"{task.source}: field 'edit_mode': editor {cfg.editor!r} does not support "
                         f"{task.edit_mode!r} (supports: {', '.join(editor.modes)})")
    if task.edit_mode not in RUNNABLE_MODES:
        raise ValueError(f"{task.source}: field 'edit_mode': {task.edit_mode!r} is not run by this version "
                         f"(runs: {', '.join(RUNNABLE_MODES)})")
    if task.edit_mode == "sequential":
        if task.sequential is None:
            raise ValueError(f"{task.source}: field 'sequential': edit_mode sequential needs measure_every, "
                             "panel_edited and panel_untouched")
        if cfg.num_shards > 1:
            raise ValueError(f"{task.source}: field 'edit_mode': a sequential run is one chain of edits and cannot "
                             "be sharded (run it with one shard)")
    if task.edit_mode == "batch" and task.batch_size is None:
        raise ValueError(f"{task.source}: field 'batch': edit_mode batch needs batch.size")
    return Prepared(task, editor, choice, estimators)


def shard_from_environment(env: dict[str, str]) -> tuple[int, int] | None:
    """(num_shards, shard_index) from torchrun (WORLD_SIZE/RANK) or a Slurm array, when present."""
    if "WORLD_SIZE" in env and "RANK" in env:
        return int(env["WORLD_SIZE"]), int(env["RANK"])
    if "SLURM_ARRAY_TASK_COUNT" in env and "SLURM_ARRAY_TASK_ID" in env:
        first = int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
        return int(env["SLURM_ARRAY_TASK_COUNT"]), int(env["SLURM_ARRAY_TASK_ID"]) - first
    return None


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
