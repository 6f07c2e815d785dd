"""The Editor protocol: apply edit requests in place, hand back a handle that restores the exact weights.

Like a scikit-learn estimator, an editor is built from explicit hyper-parameters (a dataclass loaded
from YAML, recorded verbatim in results) and exposes one verb, :meth:`Editor.apply`. The returned
:class:`EditHandle` keeps a copy of every tensor the edit touched and a hash of each; ``restore()``
copies them back and verifies the hashes, so a restore that is not bit-exact stops the run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import yaml

MODES = ("single", "sequential", "batch")


@dataclass(frozen=True)
class EditRequest:
    """One fact to write: after the edit, ``prompt`` should be completed by ``target``."""

    record_id: str
    prompt: str
    subject: str
    target: str
    ground_truth: str | None = None


class RestoreError(RuntimeError):
    """Restored weights differ from the originals: every later number would be wrong, so the run stops."""


def tensor_digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()


def state_digest(model: torch.nn.Module) -> str:
    """sha256 over every tensor of the state dict, bit for bit: equal digests mean identical weights."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class EditHandle:
    """Originals of the touched parameters; ``restore()`` puts them back bit-exactly and checks it."""

    def __init__(self, model: torch.nn.Module, param_names: list[str], diagnostics: dict | None = None):
        params = dict(model.named_parameters())
        self._params = {name: params[name] for name in param_names}
        self._originals = {name: p.detach().clone() for name, p in self._params.items()}
        self._digests = {name: tensor_digest(t) for name, t in self._originals.items()}
        self.diagnostics: dict[str, Any] = diagnostics or {}
        self.restored = False

    @property
    def touched(self) -> list[str]:
        return list(self._params)

    def original(self, name: str) -> torch.Tensor:
        """The value parameter ``name`` had before this edit."""
        return self._originals[name]

    @torch.no_grad()
    def digest(self) -> str:
        """sha256 of the touched parameters' current values (a replayed edit must reproduce it bit for bit)."""
        h = hashlib.sha256()
        for name, p in sorted(self._params.items()):
            h.update(name.encode())
            h.update(tensor_digest(p).encode())
        return h.hexdigest()

    @torch.no_grad()
    def drift(self) -> float:
        """Frobenius norm of (current - original) over the touched tensors: how far the weights are from before."""
        return float(sum(((p.detach() - self._originals[n]).double() ** 2).sum() for n, p in self._params.items())
                     ** 0.5)

    @torch.no_grad()
    def restore(self) -> None:
        for name, p in self._params.items():
            p.copy_(self._originals[name])
            if tensor_digest(p) != self._digests[name]:
                raise RestoreError(f"parameter {name} differs from its original after restore")
        self.restored = True


class Editor:
    """Base class of all editors. Subclasses set ``name``, ``modes``, ``Hparams`` and implement ``apply``."""

    name: ClassVar[str]
    modes: ClassVar[tuple[str, ...]] = ("single",)
    #: Whether single edits of several records can be measured in one batch (``editprobe.benchmark.multiedit``):
    #: true when an edit is nothing but its change to weight matrices (restored in full by the handle) plus, at
    #: most, the editor's own prompt wrapping, and one edit does not depend on another having been applied.
    row_batchable: ClassVar[bool] = False
    Hparams: ClassVar[type]
    #: The run's cache root (set by ``build_editor``): where an editor that caches statistics keeps them unless
    #: its hyper-parameters name a folder. A location, not a hyper-parameter, so results never record it.
    cache_root: Path | None = None

    def __init__(self, hparams: Any = None, **overrides: Any):
        base = hparams if hparams is not None else self.Hparams()
        self.hparams = dataclasses.replace(base, **overrides) if overrides else base
        check_hparams(self.hparams, f"{getattr(self, 'name', type(self).__name__)} hyper-parameters")

    def apply(self, model, tokenizer, requests: list[EditRequest]) -> EditHandle:
        raise NotImplementedError

    def sampling_seed(self, task_seed: int) -> int:
        """Seed of the post-edit sampling pass. The default, the task's own seed, pairs every post-edit sample
        with its pre-edit twin (common random numbers); the ``null`` control draws from another stream."""
        return task_seed

    def wrap_prompt(self, prompt: str, request: EditRequest) -> str:
        """Editors that change no weight (in-context editing) rewrite the probes instead; default: unchanged."""
        return prompt

    def hparams_dict(self) -> dict:
        return dataclasses.asdict(self.hparams)


# --------------------------------------------------------------------------- hyper-parameters: typed, checked early

#: ``RANGES`` of a hyper-parameter class: ``{field: (low, high, low_open)}``, ``None`` for an open end; merged
#: along the class hierarchy so a subclass that changes a default keeps its parent's bounds.
Range = tuple  # (low | None, high | None, low_open: bool)


def _ranges(cls: type) -> dict[str, Range]:
    out: dict[str, Range] = {}
    for klass in reversed(cls.__mro__):
        out.update(vars(klass).get("RANGES", {}))
    return out


def _type_ok(value: Any, hint: Any) -> tuple[bool, str]:
    """Whether ``value`` fits the annotation ``hint`` (Literal, unions, tuple[...], the scalar types), and how
    the annotation reads in an error message."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True, "any value"
    if origin is Literal:
        return value in args, "one of " + ", ".join(map(str, args))
    if origin in (typing.Union, types.UnionType):
        results = [_type_ok(value, a) for a in args]
        return any(ok for ok, _ in results), " or ".join(w for _, w in results)
    if hint is type(None):
        return value is None, "null"
    if origin is tuple:
        inner = args[0] if len(args) == 2 and args[1] is Ellipsis else None
        wanted = f"a list of values, each {_type_ok(None, inner)[1]}" if inner is not None else "a list"
        ok = isinstance(value, tuple) and (inner is None or all(_type_ok(v, inner)[0] for v in value))
        return ok, wanted
    if origin is dict or hint is dict:
        return isinstance(value, dict), "a mapping"
    if hint is bool:
        return isinstance(value, bool), "true or false"
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), "an integer"
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    if hint is str:
        return isinstance(value, str), "a string"
    if isinstance(hint, type):
        return isinstance(value, hint), f"a {hint.__name__}"
    return True, str(hint)


def check_hparams(hparams: Any, where: str) -> None:
    """Every field's value against its annotation (Literal choices, types) and its class's ``RANGES``; the first
    violation raises ValueError naming ``where`` and the field. Runs before any model loads."""
    hints = typing.get_type_hints(type(hparams))
    ranges = _ranges(type(hparams))
    for f in dataclasses.fields(hparams):
        value = getattr(hparams, f.name)
        ok, wanted = _type_ok(value, hints.get(f.name, Any))
        if not ok:
            raise ValueError(f"{where}: field '{f.name}' must be {wanted}, got {value!r}")
        low, high, low_open = ranges.get(f.name, (None, None, False))
        if value is not None and ((low is not None and (value <= low if low_open else value < low))
                                  or (high is not None and value > high)):
            span = f"{'(' if low_open else '['}{'-inf' if low is None else low}, {'inf' if high is None else high}]"
            raise ValueError(f"{where}: field '{f.name}' must lie in {span}, got {value!r}")


def load_hparams(cls: type, path) -> Any:
    """A hyper-parameter dataclass from YAML, a path or a shipped preset resource. Unknown keys, values of the
    wrong type, choices outside a ``Literal`` and values outside the class's ``RANGES`` are each one error naming
    the file and the field."""
    if path is None:
        return cls()
    path = Path(path) if isinstance(path, str) else path
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of hyper-parameter names to values")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{path}: unknown hyper-parameter(s) {', '.join(unknown)} for {cls.__name__} "
                         f"(known: {', '.join(sorted(known))})")
    hints = typing.get_type_hints(cls)
    values = {k: _as_tuples(v) if _wants_tuple(hints.get(k)) else v for k, v in data.items()}
    try:
        hparams = cls(**values)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    check_hparams(hparams, str(path))
    return hparams


def _wants_tuple(hint: Any) -> bool:
    return typing.get_origin(hint) is tuple or any(typing.get_origin(a) is tuple for a in typing.get_args(hint))


def _as_tuples(value: Any) -> Any:
    """YAML lists -> tuples, nested too (frozen dataclasses stay hashable)."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, list) else value


@dataclass(frozen=True)
class NoHparams:
    """Editors without hyper-parameters."""

    extra: dict = field(default_factory=dict)
