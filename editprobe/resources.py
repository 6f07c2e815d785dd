"""The package's own read-only data: tasks, schemas, leaderboard templates, the release recipe.

Everything is read through :mod:`importlib.resources`, so it works the same from a checkout (editable install),
from an unpacked wheel in a read-only site-packages, and from a zip. Callers get ``Traversable`` objects
(``read_text``, ``joinpath``, ``iterdir``, ``name``); a user-supplied ``pathlib.Path`` offers the same methods,
so every reader here accepts either. Nothing is ever written below these folders: caches go to
:func:`editprobe.paths.default_cache_dir`, outputs where the user says.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Union

import yaml

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

    Resource = Union[Traversable, Path]


def tasks_dir() -> "Traversable":
    """``tasks/`` of the repository (installed as ``editprobe.tasks``)."""
    return files("editprobe.tasks")


def schemas_dir() -> "Traversable":
    """``schemas/`` of the repository (installed as ``editprobe.schemas``)."""
    return files("editprobe.schemas")


def leaderboard_dir() -> "Traversable":
    """``leaderboard/`` (templates, static assets, the submission guide)."""
    return files("editprobe.leaderboard")


def release_dir() -> "Traversable":
    """``dataset_builder/release/``: the recipe of the released set, its paraphrase files and seed LLM cache."""
    return files("editprobe.dataset_builder").joinpath("release")


def files_with_suffix(folder: "Resource", suffix: str) -> list["Resource"]:
    """The files directly in ``folder`` whose names end with ``suffix``, by name (a missing folder: none)."""
    if not folder.is_dir():
        return []
    return sorted((f for f in folder.iterdir() if f.is_file() and f.name.endswith(suffix)), key=lambda f: f.name)


def read_yaml(resource: "Resource"):
    return yaml.safe_load(resource.read_text(encoding="utf-8"))


def stem(resource: "Resource") -> str:
    """The file name without its last suffix (``zsre.yaml`` -> ``zsre``)."""
    name = resource.name
    return name.rsplit(".", 1)[0] if "." in name else name
