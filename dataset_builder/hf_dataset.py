"""Hugging Face dataset writer and reader for the perturbation set.

The folder written here is a Hugging Face dataset repository: one JSON Lines file per config and
split (records in the released JSON format, topics as names) and a ``README.md`` card whose YAML
declares ``configs`` and ``dataset_info`` features, so ``datasets.load_dataset(folder, "zsre")``
works offline and ``push_to_hub`` publishes the same folder. The ``Features`` are derived from
``schemas/perturbation_record.schema.json`` (topic as a 15-way ``ClassLabel`` from tasks/topics.yaml),
never written out by hand.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from editprobe.formats import CONFIGS, FormatError, load_schema, load_topics, schema_errors

RECORD_SCHEMA = "perturbation_record"


# --------------------------------------------------------------------------- Features from the schema

def _resolve(schema: dict, node: dict) -> dict:
    """Follow local ``#/$defs/...`` references and merge ``allOf`` branches (enough for our schemas)."""
    while "$ref" in node:
        ref = node["$ref"]
        target = schema
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    if "allOf" in node:
        merged: dict = {"type": "object", "properties": {}}
        for branch in node["allOf"]:
            merged["properties"].update(_resolve(schema, branch).get("properties", {}))
        node = merged
    return node


def _feature(schema: dict, node: dict, name: str):
    from datasets import ClassLabel, List, Value

    if node.get("$ref") == "#/$defs/topic":
        return ClassLabel(names=list(load_topics()))
    node = _resolve(schema, node)
    kind = node.get("type")
    kinds = set(kind) if isinstance(kind, list) else {kind}
    kinds.discard("null")
    if kinds == {"string"}:
        return Value("string")
    if kinds == {"integer"}:
        return Value("int64")
    if kinds == {"number"}:
        return Value("float64")
    if kinds == {"boolean"}:
        return Value("bool")
    if kinds == {"array"}:
        items = node.get("items", {})
        if items is False:  # prefixItems-only arrays: every element shares the first shape
            items = {"$ref": node["prefixItems"][0]["$ref"]}
        return List(_feature(schema, items, name))
    if kinds == {"object"}:
        return {key: _feature(schema, sub, key) for key, sub in node.get("properties", {}).items()}
    raise TypeError(f"schema field {name!r} has no dataset feature mapping (type {kind!r})")


def record_features():
    """``datasets.Features`` of a released record, derived from the JSON schema."""
    from datasets import Features

    schema = load_schema(RECORD_SCHEMA)
    root = _resolve(schema, schema)
    return Features({key: _feature(schema, node, key) for key, node in root["properties"].items()})


# --------------------------------------------------------------------------- writing

def write_dataset(out_dir: Path | str, data: dict[str, dict[str, list[dict]]], card_prose: str,
                  card_meta: dict[str, Any] | None = None) -> Path:
    """Write ``{config: {split: [record, ...]}}`` as a Hugging Face dataset folder.

    Every record is validated against the perturbation-record schema before anything is written;
    the first violation raises :class:`FormatError` naming config, split, record id and field.
    Configs already present in the folder and not in ``data`` are kept (the card lists them all).
    """
    out_dir = Path(out_dir)
    for config, splits in data.items():
        for split, records in splits.items():
            for i, record in enumerate(records):
                problems = schema_errors(record, RECORD_SCHEMA)
                if problems:
                    raise FormatError(f"{out_dir}/{config}/{split}.jsonl: record {i} "
                                      f"(id {record.get('id')!r}): field {problems[0]}")
    for config, splits in data.items():
        for split, records in splits.items():
            path = out_dir / config / f"{split}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".jsonl.tmp")
            with open(tmp, "w", encoding="utf-8") as fh:
                for record in records:
                    fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            tmp.replace(path)
    write_card(out_dir, card_prose, card_meta or {})
    return out_dir


def _present_splits(out_dir: Path) -> dict[str, dict[str, tuple[int, int]]]:
    """{config: {split: (num_examples, num_bytes)}} of the JSONL files in the folder."""
    found: dict[str, dict[str, tuple[int, int]]] = {}
    for config in CONFIGS:
        for path in sorted((out_dir / config).glob("*.jsonl")):
            with open(path, encoding="utf-8") as fh:
                n = sum(1 for line in fh if line.strip())
            found.setdefault(config, {})[path.stem] = (n, path.stat().st_size)
    return found


def _size_category(n: int) -> str:
    return "n<1K" if n < 1000 else "1K<n<10K" if n < 10000 else "10K<n<100K"


def write_card(out_dir: Path, prose: str, meta: dict[str, Any]) -> Path:
    """README.md with the YAML header ``load_dataset`` and the Hub read (configs, dataset_info, license)."""
    present = _present_splits(out_dir)
    features = record_features()._to_yaml_list()
    header = {
        "license": "mit",
        "language": ["en"],
        "pretty_name": "editprobe perturbation set",
        "task_categories": ["question-answering", "text-generation"],
        "tags": ["model-editing", "uncertainty", "paraphrase", "knowedit"],
        "size_categories": [_size_category(sum(n for s in present.values() for n, _ in s.values()))],
        "configs": [{"config_name": config,
                     "data_files": [{"split": split, "path": f"{config}/{split}.jsonl"} for split in splits]}
                    for config, splits in present.items()],
        "dataset_info": [{"config_name": config, "features": features,
                          "splits": [{"name": split, "num_bytes": size, "num_examples": n}
                                     for split, (n, size) in splits.items()]}
                         for config, splits in present.items()],
        **meta,
    }
    text = "---\n" + yaml.safe_dump(header, sort_keys=False, allow_unicode=True, width=1000) + "---\n\n" + prose
    path = out_dir / "README.md"
    path.write_text(text, encoding="utf-8")
    return path


def push_to_hub(out_dir: Path | str, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Upload the folder as a dataset repository (needs network and a write token: HF_TOKEN or ``token``)."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    info = api.upload_folder(folder_path=str(out_dir), repo_id=repo_id, repo_type="dataset",
                             commit_message="editprobe build")
    return str(info)


# --------------------------------------------------------------------------- reading

def load_records(folder: Path | str, config: str, split: str = "test", cache_dir: str | None = None) -> list[dict]:
    """Read a config back through ``datasets.load_dataset``, with topics as names (the released JSON form)."""
    from datasets import load_dataset

    ds = load_dataset(str(folder), config, split=split, cache_dir=cache_dir)
    topic = ds.features["topic"]
    rows = []
    for row in ds:
        row = dict(row)
        if row["topic"] is not None and row["topic"] >= 0:
            row["topic"] = topic.int2str(row["topic"])
        rows.append(row)
    return rows
