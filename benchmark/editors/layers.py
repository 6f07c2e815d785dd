"""Where the locate-then-edit methods write: the MLP output projection of a decoder layer, per architecture.

ROME, MEMIT and AlphaEdit treat the MLP's second matrix as a linear key-value memory: its input ``k``
(the hidden units, ``d_in`` wide) is the key, its output (``d_out``, the residual width) the value.
The module holding that matrix, and the orientation of its weight, depend on the architecture:

=============  ======================================  ==========================  =========================
model_type     module (``{}`` = layer index)            weight                      final norm
=============  ======================================  ==========================  =========================
llama, mistral ``model.layers.{}.mlp.down_proj``        nn.Linear ``(out, in)``     ``model.norm``
qwen2, qwen3
gemma(2), gemma3_text
gpt2           ``transformer.h.{}.mlp.c_proj``          Conv1D ``(in, out)``        ``transformer.ln_f``
gptj           ``transformer.h.{}.mlp.fc_out``          nn.Linear ``(out, in)``     ``transformer.ln_f``
gpt_neox       ``gpt_neox.layers.{}.mlp.dense_4h_to_h`` nn.Linear ``(out, in)``     ``gpt_neox.final_layer_norm``
=============  ======================================  ==========================  =========================

An hparams ``module_template`` overrides the table (the block list is then the template's prefix before
``.{}``); the orientation always comes from the module class. The final norm is needed only to run the
layers above an edit on their own (see ``rome.UpperLayers``); where it is unknown, editors fall back to
full forward passes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Layout:
    """Dotted module paths of one architecture family."""

    blocks: str           # the ModuleList of decoder blocks
    mlp_out: str          # the MLP output projection, "{}" = layer index
    final_norm: str | None  # applied to the last block's output before the LM head
    #: every weight matrix of the MLP, in forward order ("{}" = layer index): what MEND edits (EasyEdit's
    #: inner_params name gate, up and down projections for LLaMA; MEND's own GPT configs both c_fc and c_proj)
    mlp_all: tuple[str, ...] = ()


_LLAMA_LIKE = Layout("model.layers", "model.layers.{}.mlp.down_proj", "model.norm",
                     ("model.layers.{}.mlp.gate_proj", "model.layers.{}.mlp.up_proj", "model.layers.{}.mlp.down_proj"))

LAYOUTS: dict[str, Layout] = {
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
    "gemma": _LLAMA_LIKE,
    "gemma2": _LLAMA_LIKE,
    "gemma3_text": _LLAMA_LIKE,   # Gemma 3: norms before and after the MLP; down_proj's output is still the value
    "gpt2": Layout("transformer.h", "transformer.h.{}.mlp.c_proj", "transformer.ln_f",
                   ("transformer.h.{}.mlp.c_fc", "transformer.h.{}.mlp.c_proj")),
    "gptj": Layout("transformer.h", "transformer.h.{}.mlp.fc_out", "transformer.ln_f",
                   ("transformer.h.{}.mlp.fc_in", "transformer.h.{}.mlp.fc_out")),
    "gpt_neox": Layout("gpt_neox.layers", "gpt_neox.layers.{}.mlp.dense_4h_to_h", "gpt_neox.final_layer_norm",
                       ("gpt_neox.layers.{}.mlp.dense_h_to_4h", "gpt_neox.layers.{}.mlp.dense_4h_to_h")),
}

_FINAL_NORM_GUESSES = ("model.norm", "transformer.ln_f", "gpt_neox.final_layer_norm", "model.final_layernorm")


def get_module(model: torch.nn.Module, dotted: str) -> torch.nn.Module:
    try:
        return model.get_submodule(dotted)
    except AttributeError as exc:
        raise ValueError(f"{type(model).__name__} has no module {dotted!r}") from exc


def _has_module(model: torch.nn.Module, dotted: str) -> bool:
    try:
        model.get_submodule(dotted)
        return True
    except AttributeError:
        return False


def resolve_layout(model: torch.nn.Module, module_template: str | None = None) -> Layout:
    """The layout of ``model`` from ``config.model_type``, or built around an explicit ``module_template``."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if module_template is None:
        if model_type in LAYOUTS:
            return LAYOUTS[model_type]
        if _has_module(model, _LLAMA_LIKE.mlp_out.format(0)):
            return _LLAMA_LIKE
        raise ValueError(f"no MLP layout known for model_type {model_type!r}; set module_template in the hparams "
                         f"(known: {', '.join(sorted(LAYOUTS))})")
    if ".{}." not in module_template:
        raise ValueError(f"module_template {module_template!r} must contain '.{{}}.' where the layer index goes")
    blocks = module_template.split(".{}.")[0]
    known = LAYOUTS.get(model_type)
    if known is not None and known.blocks == blocks:
        final_norm = known.final_norm
    else:
        final_norm = next((g for g in _FINAL_NORM_GUESSES if _has_module(model, g)), None)
    return Layout(blocks, module_template, final_norm)


def weight_is_transposed(module: torch.nn.Module) -> bool:
    """True when the weight is stored ``(in, out)`` (GPT-2's Conv1D), False for ``(out, in)`` (nn.Linear)."""
    if isinstance(module, torch.nn.Linear):
        return False
    if type(module).__name__ == "Conv1D":  # transformers.pytorch_utils.Conv1D: y = x @ W + b
        return True
    raise TypeError(f"cannot tell the weight orientation of {type(module).__name__}; "
                    "expected torch.nn.Linear or transformers' Conv1D")


@dataclass
class EditSite:
    """One edited matrix: the MLP output projection of ``layer`` as a map from ``d_in`` keys to ``d_out`` values."""

    layer: int
    name: str                   # module name, e.g. "model.layers.8.mlp.down_proj"
    module: torch.nn.Module
    transposed: bool

    @property
    def weight_name(self) -> str:
        return f"{self.name}.weight"

    @property
    def weight(self) -> torch.nn.Parameter:
        return self.module.weight

    @property
    def d_in(self) -> int:
        return self.weight.shape[0] if self.transposed else self.weight.shape[1]

    @property
    def d_out(self) -> int:
        return self.weight.shape[1] if self.transposed else self.weight.shape[0]

    def matrix(self) -> torch.Tensor:
        """W as ``(d_out, d_in)`` whatever the storage (a view, not a copy)."""
        return self.weight.T if self.transposed else self.weight

    @torch.no_grad()
    def add_(self, delta: torch.Tensor) -> None:
        """W <- W + delta, with ``delta`` given as ``(d_out, d_in)``."""
        if tuple(delta.shape) != (self.d_out, self.d_in):
            raise ValueError(f"{self.name}: update has shape {tuple(delta.shape)}, expected ({self.d_out}, {self.d_in})")
        delta = delta.to(self.weight.dtype)
        self.weight.add_(delta.T if self.transposed else delta)


def edit_site(model: torch.nn.Module, layer: int, module_template: str | None = None) -> EditSite:
    layout = resolve_layout(model, module_template)
    name = layout.mlp_out.format(layer)
    module = get_module(model, name)
    return EditSite(layer, name, module, weight_is_transposed(module))


def mlp_sites(model: torch.nn.Module, layer: int, module_templates: tuple[str, ...] | None = None) -> list[EditSite]:
    """Every MLP weight matrix of ``layer`` (the architecture table's ``mlp_all``, or ``module_templates``), each
    as an :class:`EditSite` (so ``d_in``/``d_out`` and the orientation are right for nn.Linear and Conv1D alike)."""
    if module_templates is None:
        layout = resolve_layout(model)
        if not layout.mlp_all:
            raise ValueError(f"no MLP matrix list known for model_type {getattr(model.config, 'model_type', None)!r};"
                             " set the editor's module_templates")
        module_templates = layout.mlp_all
    sites = []
    for template in module_templates:
        if "{}" not in template:
            raise ValueError(f"module template {template!r} must contain '{{}}' where the layer index goes")
        name = template.format(layer)
        module = get_module(model, name)
        sites.append(EditSite(layer, name, module, weight_is_transposed(module)))
    return sites


def decoder_blocks(model: torch.nn.Module, layout: Layout) -> torch.nn.ModuleList:
    blocks = get_module(model, layout.blocks)
    if not isinstance(blocks, torch.nn.ModuleList):
        raise TypeError(f"{layout.blocks} is a {type(blocks).__name__}, expected the ModuleList of decoder blocks")
    return blocks
