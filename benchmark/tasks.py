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
from editprobe.paths import REPO_ROOT, TASKS_DIR


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

    @property
    def hash(self) -> str:
        return task_hash(self.spec)

    def resolved_dataset_path(self) -> str:
        """A relative local path resolves against the repository root; anything else is a hub id."""
        local = REPO_ROOT / self.dataset_path
        return str(local) if not Path(self.dataset_path).is_absolute() and local.exists() else self.dataset_path


def task_hash(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def task_files() -> list[Path]:
    return sorted(p for p in TASKS_DIR.glob("*.yaml") if p.name != "topics.yaml")


def load_task(name_or_path: str | Path, overrides: dict | None = None) -> Task:
    """Load a task by name (tasks/<name>.yaml) or path; ``overrides`` patch ``dataset`` keys (e.g. path)."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = TASKS_DIR / f"{name_or_path}.yaml"
    if not path.exists():
        known = ", ".join(p.stem for p in task_files())
        raise ValueError(f"unknown task {str(name_or_path)!r} (known: {known})")
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    if overrides:
        spec = {**spec, "dataset": {**spec["dataset"], **overrides}}
    validate(spec, "task", str(path))
    u = spec["uncertainty"]
    return Task(
        name=spec["name"], version=spec["version"], description=spec["description"],
        dataset_path=spec["dataset"]["path"], dataset_config=spec["dataset"]["config"],
        dataset_split=spec["dataset"]["split"], dataset_revision=spec["dataset"].get("revision"),
        edit_mode=spec["edit_mode"], metrics=spec["metrics"],
        uncertainty=UncertaintySettings(**{**u, "levels": tuple(u["levels"])}),
        seed=spec["seed"], spec=spec, source=str(path))
