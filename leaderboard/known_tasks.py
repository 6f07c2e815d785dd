"""The benchmark tasks a submission may have been run on, read from ``tasks/*.yaml`` (never via benchmark).

A task's hash is the sha256 of its content as canonical JSON (``json.dumps(spec, sort_keys=True,
separators=(",", ":"))``), the rule the runner records. ``editprobe run --dataset PATH`` hashes the task
*after* replacing ``dataset.path`` by PATH (the dataset is then identified by its fingerprint), so a
reported hash is accepted when it equals the task file's hash either as written or with ``dataset.path``
set to the path the run reports in ``provenance.dataset.path``: every other setting (sampling, metrics,
seed, config, split) must still be byte-for-byte the task file's.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from editprobe.formats import CONFIGS
from editprobe.resources import files_with_suffix, tasks_dir

# Display order on the site (that of the dataset configs); other tasks follow alphabetically.
TASK_ORDER = CONFIGS


def spec_hash(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class KnownTask:
    name: str
    version: int
    spec: dict
    source: str

    @property
    def hash(self) -> str:
        return spec_hash(self.spec)

    def hash_with_dataset_path(self, path: str) -> str:
        return spec_hash({**self.spec, "dataset": {**self.spec["dataset"], "path": path}})

    def accepts(self, reported_hash: str, dataset_path: str) -> bool:
        return reported_hash in (self.hash, self.hash_with_dataset_path(dataset_path))


def load_known_tasks(folder: Path | None = None) -> dict[str, KnownTask]:
    """Benchmark tasks by name: every ``*.yaml`` directly in ``folder`` (default: the shipped tasks) that
    declares a name and a dataset."""
    known = {}
    for path in files_with_suffix(Path(folder) if folder is not None else tasks_dir(), ".yaml"):
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
        if isinstance(spec, dict) and {"name", "version", "dataset", "uncertainty"} <= spec.keys():
            known[spec["name"]] = KnownTask(spec["name"], spec["version"], spec, str(path))
    return known


def task_sort_key(name: str) -> tuple[int, int, str]:
    """Tasks by the config they score, in the dataset's order (a variant such as ``zsre-fast`` or
    ``zsre_sequential`` after its config's own task), then the rest alphabetically."""
    configs = [c for c in TASK_ORDER if name == c or name.startswith((f"{c}-", f"{c}_"))]
    if not configs:
        return (len(TASK_ORDER), 1, name)
    config = max(configs, key=len)
    return (TASK_ORDER.index(config), name != config, name)
