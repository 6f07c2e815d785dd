"""Benchmark tasks are data: ``tasks/<name>.yaml`` validated against ``schemas/task.schema.json``.

A task's hash is the sha256 of its resolved content as canonical JSON; it goes into every result so
numbers from different runs are comparable only when the hashes match.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from editprobe.formats import validate
from editprobe.resources import files_with_suffix, stem, tasks_dir


@dataclass(frozen=True)
class UncertaintySettings:
    question_field: str
    levels: tuple[int, ...]
    samples_per_paraphrase: int
    temperature: float
    top_p: float
    top_k: int
    max_new_tokens: int
    system_prompt: str | None
    chat_template: bool
    embedding_model: str
    distance: str
    delta_floor: float
    bootstrap: int


#: What a task scores when it lists no ``estimators``: Appendix C.1's trio, with the task's ``distance``.
DEFAULT_ESTIMATORS = ("U", "U_alea", "U_epis")


@dataclass(frozen=True)
class SequentialSettings:
    """``edit_mode: sequential``: edits applied one after another without restore. Every ``measure_every`` steps
    (and after the last) the runner measures a fixed panel: the first ``panel_edited`` records edited (once they
    are) and ``panel_untouched`` records that are never edited (taken after the edited ones)."""

    measure_every: int
    panel_edited: int
    panel_untouched: int


@dataclass(frozen=True)
class Task:
    name: str
    version: int
    description: str
    dataset_path: str
    dataset_config: str
    dataset_split: str
    dataset_revision: str | None
    edit_mode: str
    metrics: dict
    uncertainty: UncertaintySettings
    seed: int
    spec: dict          # the resolved YAML content, verbatim
    source: str         # file it came from
    estimators: tuple[str, ...] = DEFAULT_ESTIMATORS
    sequential: SequentialSettings | None = None
    batch_size: int | None = None       # edit_mode batch: edits written at once
    free_answers: int = 0               # greedy free answers for `editprobe judge`: max new tokens (0: none); set by the run, not the file

    @property
    def hash(self) -> str:
        return task_hash(self.spec)

    def resolved_dataset_path(self) -> str:
        """An existing local folder (relative paths from the current directory), else a hub id as written."""
        local = Path(self.dataset_path)
        return str(local.resolve()) if local.exists() else self.dataset_path


def task_hash(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def task_files() -> list:
    """The shipped task files (``tasks/*.yaml`` but the topic list), as package resources."""
    return [f for f in files_with_suffix(tasks_dir(), ".yaml") if f.name != "topics.yaml"]


def load_task(name_or_path, overrides: dict | None = None) -> Task:
    """Load a task by name (a shipped ``tasks/<name>.yaml``), by path, or from a task resource;
    ``overrides`` patch ``dataset`` keys (e.g. path)."""
    path = name_or_path
    if isinstance(name_or_path, str) or isinstance(name_or_path, Path):
        path = Path(name_or_path)
        if path.suffix not in (".yaml", ".yml"):
            path = tasks_dir() / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(stem(p) for p in task_files())
        raise ValueError(f"unknown task {str(name_or_path)!r} (known: {known})")
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ValueError(f"{path}: not valid YAML{where} ({getattr(exc, 'problem', None) or exc})") from None
    if not isinstance(spec, dict):
        raise ValueError(f"{path}: field '<root>': a task file is a mapping (see schemas/task.schema.json)")
    if overrides and isinstance(spec.get("dataset"), dict):
        spec = {**spec, "dataset": {**spec["dataset"], **overrides}}
    validate(spec, "task", str(path))
    return task_from_spec(spec, str(path))


def task_from_spec(spec: dict, source: str) -> Task:
    """A Task from an already validated spec (``load_task`` validates; the GPU check reads a shipped task file
    on a node without jsonschema)."""
    u = spec["uncertainty"]
    return Task(
        name=spec["name"], version=spec["version"], description=spec["description"],
        dataset_path=spec["dataset"]["path"], dataset_config=spec["dataset"]["config"],
        dataset_split=spec["dataset"]["split"], dataset_revision=spec["dataset"].get("revision"),
        edit_mode=spec["edit_mode"], metrics=spec["metrics"],
        uncertainty=UncertaintySettings(**{**u, "levels": tuple(u["levels"])}),
        seed=spec["seed"], spec=spec, source=source,
        estimators=tuple(spec.get("estimators") or DEFAULT_ESTIMATORS),
        sequential=SequentialSettings(**spec["sequential"]) if spec.get("sequential") else None,
        batch_size=spec["batch"]["size"] if spec.get("batch") else None)
