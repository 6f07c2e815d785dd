"""The Editor protocol: apply edit requests in place, hand back a handle that restores the exact weights.

Like a scikit-learn estimator, an editor is built from explicit hyper-parameters (a dataclass loaded
from YAML, recorded verbatim in results) and exposes one verb, :meth:`Editor.apply`. The returned
:class:`EditHandle` keeps a copy of every tensor the edit touched and a hash of each; ``restore()``
copies them back and verifies the hashes, so a restore that is not bit-exact stops the run.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

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
    Hparams: ClassVar[type]

    def __init__(self, hparams: Any = None, **overrides: Any):
        base = hparams if hparams is not None else self.Hparams()
        self.hparams = dataclasses.replace(base, **overrides) if overrides else base

    def apply(self, model, tokenizer, requests: list[EditRequest]) -> EditHandle:
        raise NotImplementedError

    def wrap_prompt(self, prompt: str, request: EditRequest) -> str:
        """Editors that change no weight (in-context editing) rewrite the probes instead; default: unchanged."""
        return prompt

    def hparams_dict(self) -> dict:
        return dataclasses.asdict(self.hparams)


def load_hparams(cls: type, path: Path | str | None) -> Any:
    """A hyper-parameter dataclass from YAML (unknown keys are an error naming the file and key)."""
    if path is None:
        return cls()
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{path}: unknown hyper-parameter(s) {', '.join(unknown)} for {cls.__name__} "
                         f"(known: {', '.join(sorted(known))})")
    types = {f.name: f.type for f in dataclasses.fields(cls)}
    return cls(**{k: tuple(v) if isinstance(v, list) and "tuple" in str(types[k]) else v for k, v in data.items()})


@dataclass(frozen=True)
class NoHparams:
    """Editors without hyper-parameters."""

    extra: dict = field(default_factory=dict)
