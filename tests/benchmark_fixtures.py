"""A small perturbation set built from real ZsRE records and the committed paraphrase file, and a light task."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from editprobe.dataset_builder.hf_dataset import write_dataset
from editprobe.dataset_builder.sources import convert_file
from editprobe.resources import release_dir, tasks_dir

RELEASE = release_dir()


def build_zsre_set(data_dir: Path, out: Path, n: int = 6) -> Path:
    records = convert_file(data_dir / "knowedit" / "zsre_test.json").records[:n]
    paraphrases = {json.loads(line)["id"]: json.loads(line) for line in (RELEASE / "zsre.paraphrases.jsonl").read_text().splitlines()}
    for r in records:
        r["generated_questions"] = paraphrases[r["id"]]["paraphrases"]
        r["topic"] = paraphrases[r["id"]]["topic"]  # hand-checked label
    write_dataset(out, {"zsre": {"test": records}}, "test fixture\n")
    return out


def light_task(tmp: Path, dataset: Path, **uncertainty) -> Path:
    """tasks/zsre.yaml with shorter sampling (fewer tokens, K=2) so mechanics tests run in seconds."""
    spec = yaml.safe_load((tasks_dir() / "zsre.yaml").read_text())
    spec["name"] = "zsre_light"
    spec["dataset"]["path"] = str(dataset)
    spec["uncertainty"].update({"max_new_tokens": 8, "samples_per_paraphrase": 2, "bootstrap": 200, **uncertainty})
    path = tmp / "zsre_light.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path
