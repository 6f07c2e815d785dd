"""Run any EasyEdit method (zjunlp/EasyEdit) as an editprobe editor: ``--editor easyedit:<ALG>``, e.g. easyedit:MEND.

EasyEdit is optional and never imported until an edit is applied. It is found at ``easyedit_path`` (a checkout,
put on ``sys.path``) or, when that is empty, as the installed package ``easyeditor``. For algorithm ``ALG`` the
adapter

1. builds the method's hyper-parameters with EasyEdit's own class, ``<ALG>HyperParams.from_hparams(hparams_file)``
   (found in the package namespace, ``-`` and case ignored; ``hparams_class`` names it when the name differs, e.g.
   ``SERACHparams``);
2. sets the tokenizer up the way EasyEdit's ``BaseEditor`` would for this method: ROME, MEMIT, EMMET, EAMET,
   R-ROME, AlphaEdit, CORE and SPHERE on LLaMA / Mistral / Qwen models get **right** padding, which their
   subject and target positions assume; the padding side is put back as soon as the call returns.
   Measured with ``benchmarks/easyedit_check.py`` (EasyEdit 14cea82, SmolLM2, first ZsRE record, CPU):
   right padding, target NLL 0.10 after 25 steps and log p(target) -17.66 -> -2.04 (-1.13 in a second run:
   EasyEdit samples its context templates unseeded); editprobe's left padding, NLL 13.0 -> 10.6 and
   log p(target) -17.66 -> -23.78 (the edit does not take);
3. calls ``ALG_DICT[ALG](model, tok, [request], hparams, copy=False, return_orig_weights=True,
   keep_original_weight=True)`` directly — not ``BaseEditor.edit``, which puts the old weights back before it
   returns. ``keep_original_weight=True`` is needed too: MEND's executor empties the weights copy without it;
4. returns a handle that restores from what the method gave back: a ``(model, weights_copy)`` pair (ROME, MEMIT,
   FT, MEND, ...: ``weights_copy`` maps parameter names to their pre-edit tensors) or a ``(model, unpatch)`` pair
   (KN returns a callable that writes the old values back).

**Importing one method.** EasyEdit's package ``__init__`` imports every method, and on transformers 5 one of
them fails (``transformers.modeling_attn_mask_utils``). Where the checkout has ``<package>/models/<alg>/``, the
adapter registers the two parent packages as bare namespaces and imports only that folder (and the ``util``
modules it uses); the method's ``apply_<alg>_to_model`` or, for executors (MEND), a fresh
``<Alg>RewriteExecutor`` per edit is called. Module-level state that would tie one edit to the previous ones
is reset before every edit (:data:`STATE_RESETS`: AlphaEdit's key cache ``cache_c``). Methods that cannot
make an independent, restorable in-place edit are refused with one sentence (:data:`REFUSED_METHODS`).
Checked against EasyEdit 14cea82 (2026-07-14) with ``benchmarks/easyedit_check.py``; the test suite uses
``tests/fake_easyedit``, which has the same layout and the same broken ``models/__init__``.

The request is EasyEdit's dict: ``{"prompt", "target_new", "ground_truth", "subject"}`` (ground truth
``"<|endoftext|>"`` when unknown, as EasyEdit's own editor fills it). Methods that return a new model object
(``copy=True`` semantics, wrappers such as GRACE/WISE/SERAC) or in-context examples (IKE: use the native ``ike``
editor) are refused with a clear error: the benchmark edits the model it measures, in place.

Restore is checked without trusting EasyEdit's copy: before the edit every parameter gets a bit-level fingerprint
(the sums of its raw bit patterns and of their squares, as int64, computed on its device); after the edit the
parameters whose fingerprint changed must all be in the weights copy (else the edit is refused), and after restore
every fingerprint must match the pre-edit one, or :class:`RestoreError` stops the run.

GPU cross-check against EasyEdit (not run here; needs a CUDA machine and an EasyEdit checkout)::

    model, tok = SmolLM2-135M-Instruct in float32 on cuda:0 (editprobe.models.load_model(device="cuda"))
    request = the first ZsRE record (prompt, subject, alt, answer) as an EditRequest
    for editor in (build_editor("rome", preset="smollm2-135m"),
                   easyedit_editor("ROME")(EasyEditHparams(hparams_file="ROME/smollm2-135m.yaml",
                                                         easyedit_path="/path/to/EasyEdit"))):
        W0 = model.model.layers[L].mlp.down_proj.weight.clone()
        handle = editor.apply(model, tok, [request])
        dW = model.model.layers[L].mlp.down_proj.weight - W0      # [576, 1536], rank 1 for ROME
        acc = editprobe.benchmark.metrics.edit_accuracy(model, tok, [request.prompt, rephrase], [request.target] * 2)
        handle.restore()
    compare: the two post-edit teacher-forced accuracies (equal), rank(dW) == 1 for both, and the cosine of the two
    dW (close to 1; exact equality is not expected: ROME's covariance statistics and random context templates
    differ). The EasyEdit YAML must use the same layer, v_num_grad_steps, v_lr, kl_factor and mom2 settings as the
    native ``rome`` editor's hyper-parameters, a ``model_name`` containing "llama", and ``device: 0``.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from editprobe.benchmark.editors.base import EditHandle, Editor, EditRequest, RestoreError

UNKNOWN_GROUND_TRUTH = "<|endoftext|>"   # what EasyEdit's BaseEditor puts where no ground truth is given

#: Methods EasyEdit's BaseEditor runs with a right-padding tokenizer on LLaMA / Mistral / Qwen models
#: (easyeditor/editors/editor.py at commit 14cea82, 2026-07-14); their subject and target positions are
#: computed assuming it.
RIGHT_PADDING_METHODS = frozenset({"ROME", "MEMIT", "EMMET", "EAMET", "R-ROME", "AlphaEdit", "CORE", "SPHERE"})
RIGHT_PADDING_FAMILIES = ("llama", "mistral", "qwen")


def _reset_alphaedit(module) -> None:
    """AlphaEdit (EasyEdit 7415de2, models/alphaedit/AlphaEdit_main.py) keeps the keys of every edit it has made
    in the module global ``cache_c`` and adds them to the next edit's normal equations: a single edit would
    depend on the records before it. ``cache_c_new = False`` makes the next call start from zeros. The
    null-space projection ``P`` depends only on the model and is kept."""
    main = next((getattr(module, n) for n in dir(module) if n.lower().endswith("_main")), None)
    for target in (module, main):
        if target is not None and hasattr(target, "cache_c_new"):
            target.cache_c_new = False


#: Per-method resets of EasyEdit's module-level state, applied before every edit so edits stay independent.
STATE_RESETS = {"AlphaEdit": _reset_alphaedit}
#: Methods that cannot run one independent, in-place, restorable edit at a time, and why (one sentence each).
REFUSED_METHODS = {
    "IKE": "it edits the prompt, not the weights; use the native `ike` editor",
    "GRACE": "it wraps the model in a new object with a growing codebook, so edits are not independent",
    "WISE": "it wraps the model in a new object with side memories shared across edits",
    "SERAC": "it wraps the model in a new object with a scope classifier and counterfactual model",
}


def easyedit_padding_side(alg: str, model_name: str, model_type: str) -> str | None:
    """The padding side EasyEdit's own editor would give the tokenizer for ``alg``, or None where it keeps
    editprobe's (left) padding. ``model_name`` is EasyEdit's ``hparams.model_name``, whose substring decides
    there; the model's ``config.model_type`` is consulted too, since a local path may not name the family."""
    family = f"{model_name} {model_type}".lower()
    if alg in RIGHT_PADDING_METHODS and any(f in family for f in RIGHT_PADDING_FAMILIES):
        return "right"
    return None


@dataclass(frozen=True)
class EasyEditHparams:
    alg: str = ""                       # ALG_DICT key; set by the editor name easyedit:<ALG>
    hparams_file: str | None = None     # EasyEdit's YAML for that method
    easyedit_path: str | None = None    # checkout root; None: the installed package
    package: str = "easyeditor"
    hparams_class: str | None = None    # EasyEdit's hyper-parameter class name when it is not <ALG>HyperParams


# --------------------------------------------------------------------------- fingerprints

_INT_OF_SIZE = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


@torch.no_grad()
def fingerprint(t: torch.Tensor, chunk: int = 1 << 22) -> tuple[int, int]:
    """(sum of bit patterns, sum of their squares) as wrapping int64: any one changed element changes the first."""
    bits = t.detach().contiguous().view(-1).view(_INT_OF_SIZE[t.element_size()])
    s1 = torch.zeros((), dtype=torch.int64, device=t.device)
    s2 = torch.zeros((), dtype=torch.int64, device=t.device)
    for start in range(0, bits.numel(), chunk):
        x = bits[start:start + chunk].to(torch.int64)
        s1 += x.sum()
        s2 += (x * x).sum()
    return int(s1), int(s2)


def model_fingerprints(model) -> dict[str, tuple[int, int]]:
    return {name: fingerprint(p) for name, p in model.named_parameters()}


class EasyEditHandle(EditHandle):
    """Restores from EasyEdit's weights copy or unpatch callable, then checks every parameter's fingerprint."""

    def __init__(self, model, before: dict[str, tuple[int, int]], weights_copy: dict[str, torch.Tensor] | None,
                 unpatch: Callable[[], object] | None, touched: list[str], diagnostics: dict | None = None):
        self._model = model
        params = dict(model.named_parameters())
        self._params = {name: params[name] for name in touched}
        self._before = before
        self._weights_copy = weights_copy or {}
        self._unpatch = unpatch
        self.diagnostics = diagnostics or {}
        self.restored = False

    @torch.no_grad()
    def restore(self) -> None:
        if self._unpatch is not None:
            self._unpatch()
        params = dict(self._model.named_parameters())
        for name, original in self._weights_copy.items():
            params[name].copy_(original.to(params[name].device))
        after = model_fingerprints(self._model)
        changed = sorted(n for n in self._before if after.get(n) != self._before[n])
        if changed:
            raise RestoreError(f"parameter(s) {', '.join(changed[:5])} differ from their originals after restore")
        self.restored = True


# --------------------------------------------------------------------------- the editor

def _normalise(name: str) -> str:
    return name.replace("-", "").replace("_", "").lower()


class EasyEditEditor(Editor):
    """Base of the ``easyedit:<ALG>`` editors; :func:`easyedit_editor` makes one per algorithm."""

    name = "easyedit"
    modes = ("single", "sequential")
    Hparams = EasyEditHparams
    alg: str = ""

    def __init__(self, hparams=None, **overrides):
        super().__init__(hparams, **overrides)
        if self.alg and self.hparams.alg and self.hparams.alg != self.alg:
            raise ValueError(f"easyedit:{self.alg}: the hyper-parameters name another algorithm ({self.hparams.alg})")
        if self.alg and not self.hparams.alg:
            self.hparams = dataclasses.replace(self.hparams, alg=self.alg)
        self._easyedit = None

    def hparams_dict(self) -> dict:
        """Our settings plus the EasyEdit YAML's content, so results record the method's real hyper-parameters."""
        out = super().hparams_dict()
        if self.hparams.hparams_file and Path(self.hparams.hparams_file).exists():
            out["easyedit_config"] = yaml.safe_load(Path(self.hparams.hparams_file).read_text(encoding="utf-8"))
        return out

    def _root(self) -> Path | None:
        """The folder holding EasyEdit's package (a checkout's root, or where the installed package lives)."""
        hp = self.hparams
        if hp.easyedit_path:
            root = Path(hp.easyedit_path).resolve()
            if not (root / hp.package).is_dir():
                raise FileNotFoundError(f"easyedit_path {hp.easyedit_path} has no {hp.package}/ package folder")
            return root
        spec = importlib.util.find_spec(hp.package)
        if spec is None or not spec.submodule_search_locations:
            return None
        return Path(list(spec.submodule_search_locations)[0]).parent

    def _method_module(self, root: Path):
        """EasyEdit's ``<package>/models/<alg>`` imported on its own, or None where the checkout has no such folder.

        EasyEdit's package ``__init__`` (and ``models/__init__``) import every method, and one of them fails on
        transformers 5 (it imports ``transformers.modeling_attn_mask_utils``): the two parent packages are
        therefore registered as bare namespace modules pointing at their folders, so that only the chosen
        method's modules (and the ``util`` modules they import) run.
        """
        hp = self.hparams
        models = root / hp.package / "models"
        folder = next((d for d in sorted(models.iterdir()) if d.is_dir() and _normalise(d.name) == _normalise(hp.alg)),
                      None) if models.is_dir() else None
        if folder is None:
            return None
        for name, path in ((hp.package, root / hp.package), (f"{hp.package}.models", models)):
            if name not in sys.modules:
                stub = types.ModuleType(name)
                stub.__path__ = [str(path)]
                stub.__package__ = name
                stub.__editprobe_namespace__ = True
                sys.modules[name] = stub
        return importlib.import_module(f"{hp.package}.models.{folder.name}")

    def _load(self):
        """(apply function, EasyEdit hyper-parameters) for ``alg``; imports EasyEdit on first use."""
        hp = self.hparams
        if not hp.alg:
            raise ValueError("easyedit: no algorithm given; use the editor name easyedit:<ALG>, e.g. easyedit:ROME")
        if not hp.hparams_file:
            raise ValueError(f"easyedit:{hp.alg} needs EasyEdit's hyper-parameter YAML: give a --hparams file "
                             "with 'hparams_file: path/to/EasyEdit/hparams/<ALG>/<model>.yaml'")
        if hp.alg in REFUSED_METHODS:
            raise ValueError(f"easyedit:{hp.alg} cannot be scored here: {REFUSED_METHODS[hp.alg]}")
        if self._easyedit is None:
            root = self._root()
            if hp.easyedit_path and str(root) not in sys.path:
                sys.path.insert(0, str(root))
            module = self._method_module(root) if root is not None else None
            if module is not None:
                self._easyedit = ("module", module)
            else:  # no models/<alg> folder (a plug-in method, an older layout): EasyEdit's own ALG_DICT
                if getattr(sys.modules.get(hp.package), "__editprobe_namespace__", False):
                    del sys.modules[hp.package]  # another method's bare namespace: import the package for real
                try:
                    package = importlib.import_module(hp.package)
                except ImportError as exc:
                    raise ImportError(f"easyedit:{hp.alg} needs EasyEdit: set easyedit_path to a checkout of "
                                      f"zjunlp/EasyEdit or install the {hp.package!r} package ({exc})") from exc
                try:
                    alg_dict = importlib.import_module(f"{hp.package}.util.alg_dict").ALG_DICT
                except (ImportError, AttributeError):
                    alg_dict = getattr(package, "ALG_DICT")
                if hp.alg not in alg_dict:
                    raise ValueError(f"easyedit: {hp.alg!r} is not in EasyEdit's ALG_DICT "
                                     f"({', '.join(sorted(alg_dict))})")
                self._easyedit = ("alg_dict", package, alg_dict[hp.alg])
        wanted = hp.hparams_class or f"{hp.alg}HyperParams"
        namespace = self._easyedit[1]
        cls = getattr(namespace, wanted, None) or next(
            (getattr(namespace, n) for n in dir(namespace) if _normalise(n) == _normalise(wanted)), None)
        if cls is None:
            raise ValueError(f"easyedit: {hp.package} has no hyper-parameter class {wanted}; set hparams_class")
        return self._apply_function(), cls.from_hparams(str(hp.hparams_file))

    def _apply_function(self):
        """The method's entry point for one edit, with its module-level state reset (see :data:`STATE_RESETS`)."""
        if self._easyedit[0] == "alg_dict":
            return self._easyedit[2]
        module, alg = self._easyedit[1], self.hparams.alg
        reset = STATE_RESETS.get(alg)
        if reset is not None:
            reset(module)
        names = dir(module)
        executor = next((n for n in names if _normalise(n) == _normalise(f"{alg}RewriteExecutor")), None)
        if executor is not None:  # MEND, SERAC: EasyEdit's ALG_DICT shares one executor; a fresh one per edit
            return getattr(module, executor)().apply_to_model
        apply = next((n for n in names if _normalise(n) == _normalise(f"apply_{alg}_to_model")), None)
        if apply is None:
            raise ValueError(f"easyedit: {module.__name__} has no apply_{alg}_to_model nor {alg}RewriteExecutor")
        return getattr(module, apply)

    @staticmethod
    def request_dict(request: EditRequest) -> dict:
        return {"prompt": request.prompt, "target_new": request.target, "subject": request.subject,
                "ground_truth": request.ground_truth if request.ground_truth is not None else UNKNOWN_GROUND_TRUTH}

    def apply(self, model, tokenizer, requests: list[EditRequest]) -> EditHandle:
        apply_fn, ee_hparams = self._load()
        before = model_fingerprints(model)
        side = None
        if tokenizer is not None:
            side = easyedit_padding_side(self.hparams.alg, str(getattr(ee_hparams, "model_name", "") or ""),
                                         str(getattr(getattr(model, "config", None), "model_type", "") or ""))
        saved = tokenizer.padding_side if side is not None else None
        try:
            if side is not None:
                tokenizer.padding_side = side  # as EasyEdit's BaseEditor sets it up for this method
            result = apply_fn(model, tokenizer, [self.request_dict(r) for r in requests], ee_hparams, copy=False,
                              return_orig_weights=True, keep_original_weight=True)
        finally:
            if side is not None:
                tokenizer.padding_side = saved  # editprobe's sampling needs its left padding back
        if not (isinstance(result, tuple) and len(result) >= 2 and result[0] is model):
            self._refuse_if_changed(model, before)
            raise TypeError(f"easyedit:{self.hparams.alg} did not return (this model, weights copy | unpatch); "
                            f"got {type(result).__name__}: only in-place weight editors are supported")
        extra = result[1]
        weights_copy = extra if isinstance(extra, dict) else None
        unpatch = extra if callable(extra) else None
        if weights_copy is None and unpatch is None:
            self._refuse_if_changed(model, before)
            raise TypeError(f"easyedit:{self.hparams.alg} returned {type(extra).__name__} where a weights copy "
                            "(dict) or an unpatch callable was expected")
        after = model_fingerprints(model)
        changed = sorted(n for n in before if after[n] != before[n])
        touched = sorted(set(changed) | set(weights_copy or {}))
        handle = EasyEditHandle(model, before, weights_copy, unpatch, touched,
                                diagnostics={"alg": self.hparams.alg, "changed": changed,
                                             "restore": "weights_copy" if weights_copy is not None else "unpatch"})
        if weights_copy is not None and not set(changed) <= set(weights_copy):
            missing = sorted(set(changed) - set(weights_copy))
            raise RestoreError(f"easyedit:{self.hparams.alg} changed {', '.join(missing[:5])} without returning "
                               "their original values; the model cannot be restored")
        return handle

    @staticmethod
    def _refuse_if_changed(model, before) -> None:
        after = model_fingerprints(model)
        if any(after[n] != before[n] for n in before):
            raise RestoreError("the EasyEdit call changed weights but returned nothing to restore them with")


def easyedit_editor(alg: str) -> type[EasyEditEditor]:
    """The editor class behind the name ``easyedit:<alg>``."""
    if not alg:
        raise ValueError("editor name 'easyedit:' needs an algorithm, e.g. easyedit:ROME")
    return type(f"EasyEdit_{alg.replace('-', '_')}", (EasyEditEditor,), {"alg": alg, "__module__": __name__})
