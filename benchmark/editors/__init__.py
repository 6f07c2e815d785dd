"""Editor registry: built-ins by name, third parties by entry point (group ``editprobe.editors``) or
``package.module:Class``, EasyEdit's methods as ``easyedit:<ALG>`` (see :mod:`editprobe.registry`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from editprobe.benchmark.editors.base import EditHandle, Editor, EditRequest, NoHparams, RestoreError, load_hparams
from editprobe.registry import Registry
from editprobe.resources import files_with_suffix, read_yaml, stem, tasks_dir

EDITORS: Registry[type[Editor]] = Registry("editor", "editprobe.editors", base=Editor)
for _name, _target in (("noop", "noop:NoopEditor"), ("null", "noop:NullEditor"), ("ft", "ft:FTEditor"), ("kn", "kn:KNEditor"),
                       ("ike", "ike:IKEEditor"), ("rome", "rome:ROMEEditor"), ("memit", "memit:MEMITEditor"),
                       ("alphaedit", "alphaedit:AlphaEditEditor"), ("mend", "mend:MENDEditor")):
    EDITORS.register(_name, f"editprobe.benchmark.editors.{_target}")
EDITORS.register_prefix("easyedit", "editprobe.benchmark.editors.easyedit:easyedit_editor")

__all__ = ["DEFAULTS", "EDITORS", "EditHandle", "EditRequest", "Editor", "HparamsChoice", "RestoreError",
           "build_editor", "choose_hparams", "editor_class", "model_presets", "preset_for_model", "preset_path",
           "presets"]


def editor_class(name: str) -> type[Editor]:
    return EDITORS.get(name)


def presets(editor_name: str) -> list[str]:
    """Preset names shipped for an editor (``tasks/hparams/<editor>/<preset>.yaml``)."""
    return [stem(f) for f in files_with_suffix(tasks_dir() / "hparams" / editor_name, ".yaml")]


def preset_path(editor_name: str, preset: str):
    """The shipped preset ``tasks/hparams/<editor>/<preset>.yaml`` as a package resource, or None."""
    resource = tasks_dir() / "hparams" / editor_name / f"{preset}.yaml"
    return resource if resource.is_file() else None


#: ``--preset defaults``: the editor's dataclass defaults, chosen explicitly.
DEFAULTS = "defaults"


def model_presets() -> dict[str, str]:
    """The model-id -> preset table, ``tasks/hparams/models.yaml``."""
    return dict(read_yaml(tasks_dir() / "hparams" / "models.yaml"))


def preset_for_model(model_id: str) -> str | None:
    """The preset the table gives ``model_id``: an exact id, or for a local folder its name matched against the
    ids' last components (case-insensitive); None when the table has no entry."""
    table = model_presets()
    if model_id in table:
        return table[model_id]
    if Path(model_id).exists():
        by_name = {key.rsplit("/", 1)[-1].lower(): preset for key, preset in table.items()}
        return by_name.get(Path(model_id).resolve().name.lower())
    return None


def _takes_hparams(cls: type[Editor]) -> bool:
    return cls.Hparams is not NoHparams


@dataclasses.dataclass(frozen=True)
class HparamsChoice:
    """Where an editor's hyper-parameters come from: a file, a shipped preset, or the defaults (recorded)."""

    hparams_file: str | None
    preset: str | None


def choose_hparams(name: str, model_id: str, *, hparams_file: Path | str | None = None,
                   preset: str | None = None) -> HparamsChoice:
    """Resolve an editor's hyper-parameter source before anything loads: ``hparams_file`` wins, then ``preset``,
    then the model table (``tasks/hparams/models.yaml``). An editor with hyper-parameters and no source is an
    error naming what exists, never a silent fallback to defaults."""
    cls = editor_class(name)
    if hparams_file is not None:
        if preset is not None:
            raise ValueError("give --hparams or --preset, not both")
        return HparamsChoice(str(hparams_file), None)
    if not _takes_hparams(cls):
        if preset not in (None, DEFAULTS):
            raise ValueError(f"editor {name!r} has no hyper-parameters, so no preset {preset!r}")
        return HparamsChoice(None, None)
    folder = getattr(cls, "name", name)
    shipped = presets(folder)
    if preset == DEFAULTS:
        return HparamsChoice(None, DEFAULTS)
    chosen = preset or preset_for_model(model_id)
    if chosen is None:
        raise ValueError(f"no preset for model {model_id!r} in tasks/hparams/models.yaml; pass --preset NAME "
                         f"(editor {name!r} has: {', '.join(shipped) or 'none'}; or '{DEFAULTS}') or --hparams FILE")
    if chosen not in shipped:
        raise ValueError(f"editor {name!r} has no preset {chosen!r} (it has: {', '.join(shipped) or 'none'}); "
                         f"pass --preset NAME, --preset {DEFAULTS} or --hparams FILE")
    return HparamsChoice(None, chosen)


def build_editor(name: str, hparams_file: Path | str | None = None, preset: str | None = None,
                 cache_dir: Path | str | None = None) -> Editor:
    """An editor with hyper-parameters from ``hparams_file``, else the shipped ``preset`` (``"defaults"`` or None:
    the dataclass defaults); both are checked (names, types, choices, ranges) before anything runs.

    ``cache_dir`` is the run's cache root (:attr:`Editor.cache_root`), so editors that cache statistics use the
    same root as the rest of the run.
    """
    cls = editor_class(name)
    path = hparams_file
    if path is None and preset not in (None, DEFAULTS):
        path = preset_path(getattr(cls, "name", name), preset)
        if path is None:
            raise ValueError(f"editor {name!r} has no preset {preset!r} (it has: "
                             f"{', '.join(presets(getattr(cls, 'name', name))) or 'none'})")
    editor = cls(load_hparams(cls.Hparams, path))
    editor.cache_root = Path(cache_dir) if cache_dir is not None else None
    return editor
