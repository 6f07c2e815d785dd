"""Editor registry: built-ins by name, third parties by entry point or ``package.module:Class``.

Entry points are read from the group ``editprobe.editors`` (``name = "pkg.module:Class"``). A name
resolves in this order: built-in, entry point, ``module:Class`` target.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from pathlib import Path

from benchmark.editors.base import EditHandle, Editor, EditRequest, RestoreError, load_hparams
from editprobe.paths import TASKS_DIR

ENTRY_POINT_GROUP = "editprobe.editors"

BUILTIN: dict[str, str] = {
    "noop": "benchmark.editors.noop:NoopEditor",
    "ft": "benchmark.editors.ft:FTEditor",
    "kn": "benchmark.editors.kn:KNEditor",
    "ike": "benchmark.editors.ike:IKEEditor",
    "rome": "benchmark.editors.rome:ROMEEditor",
    "memit": "benchmark.editors.memit:MEMITEditor",
    "alphaedit": "benchmark.editors.alphaedit:AlphaEditEditor",
}

__all__ = ["BUILTIN", "EditHandle", "EditRequest", "Editor", "RestoreError", "available_editors",
           "build_editor", "editor_class", "preset_path"]


def _import(target: str) -> type:
    module, _, attr = target.partition(":")
    if not attr:
        raise ValueError(f"editor target {target!r} must look like 'package.module:Class'")
    cls = getattr(importlib.import_module(module), attr)
    if not (isinstance(cls, type) and hasattr(cls, "apply")):
        raise TypeError(f"{target} is not an editor class (it has no apply method)")
    return cls


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def available_editors() -> list[str]:
    return sorted(set(BUILTIN) | set(_entry_points()))


def editor_class(name: str) -> type:
    if name in BUILTIN:
        return _import(BUILTIN[name])
    eps = _entry_points()
    if name in eps:
        return eps[name].load()
    if name.startswith("easyedit:"):  # easyedit:<ALG> runs EasyEdit's ALG (benchmark/editors/easyedit.py)
        from benchmark.editors.easyedit import easyedit_editor

        return easyedit_editor(name.partition(":")[2])
    if ":" in name:
        return _import(name)
    raise ValueError(f"unknown editor {name!r}; known: {', '.join(available_editors())} "
                     "(or give a 'package.module:Class' target)")


def preset_path(editor_name: str, model_family: str) -> Path | None:
    """tasks/hparams/<editor>/<family>.yaml when it exists."""
    path = TASKS_DIR / "hparams" / editor_name / f"{model_family}.yaml"
    return path if path.exists() else None


def build_editor(name: str, hparams_file: Path | str | None = None, model_family: str | None = None) -> Editor:
    """An editor instance with hyper-parameters from ``hparams_file``, else the model family's preset, else defaults."""
    cls = editor_class(name)
    path = hparams_file or (preset_path(getattr(cls, "name", name), model_family) if model_family else None)
    return cls(load_hparams(cls.Hparams, path))
