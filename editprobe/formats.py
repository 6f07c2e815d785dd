"""JSON Schema loading and validation: the one home for every file format of the project.

Formats are described in ``schemas/*.schema.json`` only; code loads and validates against them and
never restates them. The topic list lives in ``tasks/topics.yaml`` and is injected into the schema's
``topic`` enum at load time, so the schema check and the Hugging Face ``ClassLabel`` read one list.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Iterable

import jsonschema
import yaml
from referencing import Registry, Resource

from editprobe.paths import SCHEMAS_DIR, TASKS_DIR


class FormatError(ValueError):
    """A document does not match its schema. The message names the document, the record and the field."""


@functools.lru_cache(maxsize=None)
def load_topics(path: Path = TASKS_DIR / "topics.yaml") -> tuple[str, ...]:
    """Topic names in ClassLabel order."""
    return tuple(t["name"] for t in _read_yaml(path)["topics"])


@functools.lru_cache(maxsize=None)
def load_topic_descriptions(path: Path = TASKS_DIR / "topics.yaml") -> tuple[tuple[str, str], ...]:
    return tuple((t["name"], t["description"]) for t in _read_yaml(path)["topics"])


def _read_yaml(path: Path) -> Any:
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


@functools.lru_cache(maxsize=None)
def load_schema(name: str) -> dict:
    """Load ``schemas/<name>.schema.json``, with the topic enum filled in from tasks/topics.yaml."""
    with open(SCHEMAS_DIR / f"{name}.schema.json", encoding="utf-8") as fh:
        schema = json.load(fh)
    topic = schema.get("$defs", {}).get("topic")
    if topic is not None:
        topic["enum"] = [*load_topics(), None]
    return schema


@functools.lru_cache(maxsize=None)
def _registry() -> Registry:
    resources = []
    for path in sorted(SCHEMAS_DIR.glob("*.schema.json")):
        schema = load_schema(path.name.removesuffix(".schema.json"))
        resource = Resource.from_contents(schema)
        resources.append((schema["$id"], resource))
        resources.append((path.name, resource))
    return Registry().with_resources(resources)


@functools.lru_cache(maxsize=None)
def validator(name: str) -> jsonschema.protocols.Validator:
    schema = load_schema(name)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, registry=_registry(), format_checker=cls.FORMAT_CHECKER)


def schema_errors(obj: Any, name: str) -> list[str]:
    """Every violation of schema ``name`` as ``field: message`` strings (empty when valid)."""
    # Most specific first: a field's own error before the "unevaluated properties" echo it causes at
    # the root when an allOf branch fails, and deeper paths before their parents.
    errors = sorted(_leaves(validator(name).iter_errors(obj)),
                    key=lambda e: (e.validator == "unevaluatedProperties", -len(e.absolute_path),
                                   [str(p) for p in e.absolute_path]))
    return [f"{_field(e)}: {_short(e)}" for e in errors]


def validate(obj: Any, name: str, where: str) -> None:
    """Raise :class:`FormatError` naming ``where`` (file and record) and the first bad field."""
    errors = schema_errors(obj, name)
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise FormatError(f"{where}: field {errors[0]}{more}")


def validate_all(objs: Iterable[Any], name: str, where: str) -> None:
    for i, obj in enumerate(objs):
        validate(obj, name, f"{where}: record {i}")


def _leaves(errors):
    """Descend into allOf/$ref wrappers so the reported error is the one on the offending field."""
    for error in errors:
        if error.context:
            yield from _leaves(error.context)
        else:
            yield error


def _field(error: jsonschema.ValidationError) -> str:
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    return f"'{path.lstrip('.') or '<root>'}'"


def _short(error: jsonschema.ValidationError) -> str:
    message = error.message
    return message if len(message) <= 200 else message[:197] + "..."

