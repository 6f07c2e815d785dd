"""JSON Schema loading and validation: the one home for every file format of the project.

Formats are described in ``schemas/*.schema.json`` only; code loads and validates against them and
never restates them. The topic list lives in ``tasks/topics.yaml`` and is injected into the schema's
``topic`` enum at load time, so the schema check and the Hugging Face ``ClassLabel`` read one list.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Iterable

from editprobe.resources import files_with_suffix, read_yaml, schemas_dir, tasks_dir


#: The source configs of the perturbation set (one per source benchmark), in the order the card and the site
#: list them; their paraphrases follow the LLaMA2 six-level scheme.
BASE_CONFIGS = ("zsre", "wiki_recent", "wiki_counterfact")
#: Every config: the base configs, then the same records paraphrased in the LLaMA3 scheme (``<base>_llama3``).
CONFIGS = BASE_CONFIGS + tuple(f"{c}_llama3" for c in BASE_CONFIGS)
#: The configs whose paraphrases are of ``newquestion`` (written from the target model's subject_knowledge).
WIKI_CONFIGS = ("wiki_recent", "wiki_counterfact", "wiki_recent_llama3", "wiki_counterfact_llama3")
#: The paraphrase scheme (``tasks/schemes/<name>.yaml``) a config's name implies.
CONFIG_SCHEMES = {c: ("llama3" if c.endswith("_llama3") else "llama2") for c in CONFIGS}


def base_config(config: str) -> str:
    """The source config a config draws its records from: ``zsre_llama3`` -> ``zsre``."""
    return config.removesuffix("_llama3")


#: Share of failed records above which a run is not ranked on the leaderboard and ``editprobe run`` exits non-zero.
MAX_FAILED_SHARE = 0.10


class FormatError(ValueError):
    """A document does not match its schema. The message names the document, the record and the field."""


@functools.lru_cache(maxsize=None)
def load_topic_descriptions() -> tuple[tuple[str, str], ...]:
    """``(name, description)`` of the 15 topics of ``tasks/topics.yaml``, in ClassLabel order."""
    return tuple((t["name"], t["description"]) for t in read_yaml(tasks_dir() / "topics.yaml")["topics"])


def load_topics() -> tuple[str, ...]:
    """Topic names in ClassLabel order."""
    return tuple(name for name, _ in load_topic_descriptions())


@functools.lru_cache(maxsize=None)
def load_schema(name: str) -> dict:
    """Load ``schemas/<name>.schema.json``, with the topic enum filled in from tasks/topics.yaml."""
    schema = json.loads((schemas_dir() / f"{name}.schema.json").read_text(encoding="utf-8"))
    topic = schema.get("$defs", {}).get("topic")
    if topic is not None:
        topic["enum"] = [*load_topics(), None]
    return schema


# jsonschema and referencing are imported where they are used, so code that only reads these constants or
# loads a task without validating it (benchmarks/gpu_check.py on a bare GPU node) does not need them.

@functools.lru_cache(maxsize=None)
def _registry():
    from referencing import Registry, Resource

    resources = []
    for path in files_with_suffix(schemas_dir(), ".schema.json"):
        schema = load_schema(path.name.removesuffix(".schema.json"))
        resource = Resource.from_contents(schema)
        resources.append((schema["$id"], resource))
        resources.append((path.name, resource))
    return Registry().with_resources(resources)


@functools.lru_cache(maxsize=None)
def validator(name: str):
    """The jsonschema validator of schema ``name`` (resolving references between the project's schemas)."""
    import jsonschema

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


def _field(error) -> str:
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    return f"'{path.lstrip('.') or '<root>'}'"


def _short(error) -> str:
    message = error.message
    return message if len(message) <= 200 else message[:197] + "..."

