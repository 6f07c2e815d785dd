"""Knowledge neurons (Dai et al., 2022, "Knowledge Neurons in Pretrained Transformers"): attribute, select, edit.

A *neuron* is one input unit of an MLP's output projection: for LLaMA, component ``i`` of
``a = silu(gate_proj(x)) * up_proj(x)``, the vector ``down_proj`` reads (1536 of them per SmolLM2 layer). Its value
vector is column ``i`` of ``down_proj.weight``.

1. **Attribution** (paper §3.1, eq. 3): the integrated gradient of the probability of the target's first token at
   the prompt's last position with respect to each neuron's activation there, approximated by a Riemann sum with
   ``steps`` points: ``Attr(a_i) = a_i / m * sum_{k=1..m} dP(k/m * a) / da_i``. Only the activations of the layer
   being attributed are scaled; every other layer runs as usual. (EasyEdit's LLaMA port scales the output of
   ``gate_proj`` instead, which is not what ``down_proj`` reads.)
2. **Selection** (§3.2, coarse step): neurons whose attribution exceeds ``adaptive_threshold`` times the largest
   attribution over all attributed layers, strongest first, at most ``max_neurons``. The refining step over several
   prompts of one fact is not done: a request carries one prompt.
3. **Edit** (§5): ``amplify`` multiplies the selected value vectors by ``amplify_factor`` (the paper's knowledge
   enhancement, done on the weights); ``rewrite`` is the paper's fact update, as in EasyEdit's ``KN``:
   ``v_i <- v_i + sign(a_i) * (update_scale * E[y_new] - erase_scale * E[y_orig])``, with ``E`` the output
   embedding (unembedding) matrix, ``y_new`` the target's first token and ``y_orig`` the first token of the original
   answer (the request's ground truth; without one, the pre-edit argmax at the prompt's last position, which is what
   EasyEdit always uses: after a ZsRE question that argmax is usually the end-of-turn token, not an answer). With
   equal scales and answers sharing their first token the update is zero: the model already leans that way.

``mode: easyedit`` is EasyEdit's own rule instead (knowledge_neurons.py at 14cea82; preset ``easyedit``, which also
attributes to the ground truth with 1 step and threshold 0.2 and keeps every neuron above it, as EasyEdit's
hparams/KN/llama-7b.yaml): the target tokenised without a leading space, the "original" the model's greedy
completion of as many tokens, the *input* word embeddings, ``2 * (E[new] - E[orig])`` for one token or the sums
over the tokens otherwise, and no activation sign. Deviation: attribution reads the first answer token only
(EasyEdit scores each token of a multi-token ground truth).

Attribution goes to ``attribute_to`` = "target" (the new answer: neurons that already lean towards it) or
"ground_truth" (the old answer, as the paper and EasyEdit do for updates; falls back to the target when the request
has no ground truth). Prompts are the raw edit prompts, without a chat template, as for FT.

Several requests in one call are attributed on the unedited model, then edited together (batch mode); sequential
mode is one call per request without restoring in between.

Cost: the prompt's prefix is run once and cached; the Riemann points of several layers run as one batch of
single-token rows on top of that cache (``batch_rows`` rows per forward), so a full 30-layer attribution of
SmolLM2 with 20 steps is a few forward/backward passes over one token.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from transformers import DynamicCache

from editprobe.benchmark.editors.base import EditHandle, Editor, EditRequest
from editprobe.benchmark.editors.layers import edit_site, resolve_layout
from editprobe.benchmark.metrics import target_token_ids


@dataclass(frozen=True)
class KNHparams:
    RANGES: ClassVar[dict] = {"steps": (1, None, False), "adaptive_threshold": (0, 1, False),
                              "max_neurons": (1, None, False), "amplify_factor": (0, None, False),
                              "erase_scale": (0, None, False), "update_scale": (0, None, False),
                              "batch_rows": (1, None, False)}

    layers: tuple[int, ...] | None = None       # layers to attribute; None: every layer
    module_template: str | None = None          # None: the architecture table (benchmark/editors/layers.py)
    attribute_to: Literal["target", "ground_truth"] = "target"
    steps: int = 20                             # Riemann points m
    adaptive_threshold: float = 0.2             # keep Attr > t * max Attr
    max_neurons: int | None = 10                # None: every neuron above the threshold (EasyEdit)
    mode: Literal["rewrite", "amplify", "easyedit"] = "rewrite"
    amplify_factor: float = 2.0
    erase_scale: float = 2.0                    # EasyEdit's KN uses 2 and 2
    update_scale: float = 2.0
    batch_rows: int = 200                       # rows (layers x steps) per forward; bounds memory


# --------------------------------------------------------------------------- attribution

def riemann_integrated_gradients(f: Callable[[torch.Tensor], torch.Tensor], activations: torch.Tensor,
                                 steps: int) -> torch.Tensor:
    """Integrated gradients from the zero baseline, right Riemann sum (Dai et al., 2022, eq. 3).

    ``activations`` [L, d] holds one activation vector per group; ``f`` maps scaled activations [L, m, d] to the
    output [L, m] whose attribution is wanted (row (l, k) must depend on ``scaled[l, k]`` only). Returns [L, d]:
    ``a * (1/m) * sum_{k=1..m} grad f(k/m * a)``.
    """
    alphas = torch.arange(1, steps + 1, dtype=activations.dtype, device=activations.device) / steps  # [m]
    scaled = (alphas[None, :, None] * activations[:, None, :].detach()).requires_grad_(True)        # [L, m, d]
    with torch.enable_grad():
        out = f(scaled)                                                                              # [L, m]
        (grads,) = torch.autograd.grad(out.sum(), scaled)                                            # [L, m, d]
    return activations.detach() * grads.sum(dim=1) / steps


class _LastToken:
    """Runs the prompt's last token, alone or as many rows, on top of a KV cache of the prefix computed once.

    Patching a neuron at the last position changes nothing at earlier positions (causal attention), so every
    Riemann point can be a single-token row that shares the unpatched prefix.
    """

    def __init__(self, model, ids: torch.Tensor):                                # ids [1, P]
        self.model, self.ids = model, ids
        params = inspect.signature(model.forward).parameters
        self.cache_arg = "cache" if "cache" in params else "past_key_values"    # transformers 5 / 4
        self.prefix = None
        if ids.shape[1] > 1:
            self.prefix = DynamicCache()
            keep = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
            with torch.no_grad():
                model(input_ids=ids[:, :-1], use_cache=True, **{self.cache_arg: self.prefix}, **keep)

    def __call__(self, rows: int):
        """Forward of ``rows`` copies of the last token -> the model output (logits [rows, 1, V])."""
        if self.prefix is None:
            return self.model(input_ids=self.ids.expand(rows, 1))
        cache = copy.deepcopy(self.prefix)
        cache.batch_repeat_interleave(rows)
        return self.model(input_ids=self.ids[:, -1:].expand(rows, 1), use_cache=True, **{self.cache_arg: cache})


def _mlp_inputs_at_last_position(last: _LastToken, modules: list[torch.nn.Module]):
    """Each module's input at the last position [L, d] and the last-position logits [V], unpatched."""
    captured: list[torch.Tensor] = [None] * len(modules)  # type: ignore[list-item]

    def grab(j):
        def hook(_module, args):
            captured[j] = args[0][0, -1].detach()
        return hook

    handles = [m.register_forward_pre_hook(grab(j)) for j, m in enumerate(modules)]
    try:
        with torch.no_grad():
            logits = last(1).logits[0, -1]
    finally:
        for h in handles:
            h.remove()
    return torch.stack(captured), logits


def neuron_attributions(model, prompt_ids: list[int], target_id: int, layers: list[int],
                        module_template: str = "model.layers.{}.mlp.down_proj", steps: int = 20,
                        batch_rows: int = 200) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Attribution of every neuron of ``layers`` to P(target_id | prompt).

    Returns (attributions [L, d_ff], the activations at the last position [L, d_ff], the last-position logits [V]).
    Row (l, k) of a batch replaces the input of layer ``layers[l]``'s module by ``k/m * a_l`` and leaves every
    other layer alone; ``batch_rows // steps`` layers share one forward.
    """
    device = next(model.parameters()).device
    last = _LastToken(model, torch.tensor([prompt_ids], device=device))
    modules = [model.get_submodule(module_template.format(layer)) for layer in layers]
    activations, logits = _mlp_inputs_at_last_position(last, modules)           # [L, d], [V]
    per_chunk = max(1, batch_rows // steps)
    scores = []
    for start in range(0, len(layers), per_chunk):
        chunk = modules[start:start + per_chunk]

        def target_prob(scaled: torch.Tensor, chunk=chunk) -> torch.Tensor:
            n_layers, m, _ = scaled.shape

            def patch(j):
                def hook(_module, args):
                    x = args[0]                                                   # [rows, 1, d]
                    return (torch.cat([x[:j * m], scaled[j].unsqueeze(1).to(x.dtype), x[(j + 1) * m:]]),)
                return hook

            handles = [mod.register_forward_pre_hook(patch(j)) for j, mod in enumerate(chunk)]
            try:
                out = last(n_layers * m)
            finally:
                for h in handles:
                    h.remove()
            probs = torch.softmax(out.logits[:, -1].float(), dim=-1)[:, target_id]  # [rows]
            return probs.view(n_layers, m)

        scores.append(riemann_integrated_gradients(target_prob, activations[start:start + len(chunk)], steps))
    return torch.cat(scores).float(), activations, logits


def select_neurons(scores: torch.Tensor, layers: list[int], adaptive_threshold: float,
                   max_neurons: int | None) -> list[tuple[int, int, float]]:
    """(layer, index, attribution) of neurons above ``adaptive_threshold * max``, strongest first (paper §3.2)."""
    top = float(scores.max())
    if top <= 0:
        return []
    flat = scores.flatten()
    keep = torch.nonzero(flat > adaptive_threshold * top).flatten()
    keep = keep[flat[keep].argsort(descending=True, stable=True)][:max_neurons]  # None keeps them all
    width = scores.shape[1]
    return [(layers[int(i) // width], int(i) % width, float(flat[i])) for i in keep]


# --------------------------------------------------------------------------- editing

@torch.no_grad()
def easyedit_rewrite_tokens(model, tokenizer, prompt: str, target: str) -> tuple[list[int], list[int]]:
    """EasyEdit's KN edit tokens (knowledge_neurons.py, ``modify_weights`` at 14cea82): the target as
    ``tokenizer.encode(target)`` (no leading space; whatever special tokens the tokenizer adds), and the "original
    prediction" as the model's greedy completion of the prompt, as many tokens as the target has, each step
    re-tokenising the prompt with the decoded tokens appended. Returns (target ids, original ids)."""
    target_ids = tokenizer.encode(target)
    device = next(model.parameters()).device
    text, argmax = prompt, []
    for _ in range(len(target_ids)):
        ids = tokenizer(text, return_tensors="pt").input_ids.to(device)
        token = int(model(ids).logits[0, -1].argmax())
        argmax.append(token)
        text += tokenizer.decode([token])
    return target_ids, argmax


@torch.no_grad()
def easyedit_rewrite_value_vectors(weight: torch.Tensor, indices: list[int], embeddings: torch.Tensor,
                                   orig_ids: list[int], new_ids: list[int]) -> None:
    """EasyEdit's KN fact update on the value vectors (columns of ``weight`` [h, d_ff]) with the *input* word
    embeddings ``embeddings`` [V, h]: one token each, ``v_i += 2 * (E[new] - E[orig])``; several,
    ``v_i += sum_j E[new_j] - sum_j E[orig_j]`` (each embedding once, as its loop does). No activation sign."""
    e = embeddings.float()
    if len(orig_ids) == 1 and len(new_ids) == 1:
        delta = 2 * e[new_ids[0]] - 2 * e[orig_ids[0]]
    else:
        delta = e[new_ids].sum(0) - e[orig_ids].sum(0)
    weight[:, indices] += delta.to(weight.dtype)[:, None]


@torch.no_grad()
def amplify_value_vectors(weight: torch.Tensor, indices: list[int], factor: float) -> None:
    """Knowledge enhancement on the weights: v_i <- factor * v_i for each selected column of ``weight`` [h, d_ff]."""
    weight[:, indices] *= factor


@torch.no_grad()
def rewrite_value_vectors(weight: torch.Tensor, indices: list[int], signs: list[float], e_orig: torch.Tensor,
                          e_new: torch.Tensor, erase_scale: float, update_scale: float) -> None:
    """Fact update (Dai et al., 2022, §5.1): v_i <- v_i + s_i * (update_scale * E[y_new] - erase_scale * E[y_orig]).

    The paper's neurons (BERT, GELU) fire positively; a SwiGLU neuron can fire negatively, and then the update must
    be subtracted for the neuron's output ``a_i * v_i`` to move towards y_new, hence ``s_i = sign(a_i)``.
    """
    delta = (update_scale * e_new.float() - erase_scale * e_orig.float()).to(weight.dtype)          # [h]
    weight[:, indices] += delta[:, None] * torch.tensor(signs, dtype=weight.dtype, device=weight.device)[None, :]


class KNEditor(Editor):
    row_batchable = True
    name = "kn"
    modes = ("single", "sequential", "batch")
    Hparams = KNHparams

    def apply(self, model, tokenizer, requests: list[EditRequest]) -> EditHandle:
        hp = self.hparams
        layers = list(hp.layers) if hp.layers is not None else list(range(model.config.num_hidden_layers))
        template = resolve_layout(model, hp.module_template).mlp_out
        chosen: list[dict] = []
        edits = []  # (request, neurons, activation signs, new token id, erased token id)
        for request in requests:
            prompt_ids, new_ids = target_token_ids(tokenizer, request.prompt, request.target)
            answer = request.ground_truth if hp.attribute_to == "ground_truth" and request.ground_truth else None
            attributed = target_token_ids(tokenizer, request.prompt, answer)[1][0] if answer else new_ids[0]
            scores, activations, logits = neuron_attributions(
                model, prompt_ids, attributed, layers, template, hp.steps, hp.batch_rows)
            neurons = select_neurons(scores, layers, hp.adaptive_threshold, hp.max_neurons)
            old_id = (target_token_ids(tokenizer, request.prompt, request.ground_truth)[1][0] if request.ground_truth
                      else int(logits.argmax()))
            signs = {(lay, idx): 1.0 if float(activations[layers.index(lay), idx]) >= 0 else -1.0
                     for lay, idx, _ in neurons}
            edits.append((request, neurons, signs, new_ids[0], old_id))
            chosen += [{"record_id": request.record_id, "layer": lay, "index": idx, "attribution": a,
                        "activation": float(activations[layers.index(lay), idx])} for lay, idx, a in neurons]
        if hp.mode == "easyedit":
            edits = [(*e[:3], *easyedit_rewrite_tokens(model, tokenizer, e[0].prompt, e[0].target)) for e in edits]
        touched = sorted({f"{template.format(lay)}.weight" for _, ns, *_ in edits for lay, _, _ in ns})
        handle = EditHandle(model, touched)
        unembedding = model.get_output_embeddings().weight                           # [V, h]
        for _request, neurons, signs, new_id, orig_id in edits:
            for layer in sorted({lay for lay, _, _ in neurons}):
                weight = edit_site(model, layer, template).matrix()  # [h, d_ff] whatever the storage
                indices = [idx for lay, idx, _ in neurons if lay == layer]
                if hp.mode == "amplify":
                    amplify_value_vectors(weight, indices, hp.amplify_factor)
                elif hp.mode == "easyedit":
                    easyedit_rewrite_value_vectors(weight, indices, model.get_input_embeddings().weight, orig_id, new_id)
                else:
                    rewrite_value_vectors(weight, indices, [signs[layer, i] for i in indices],
                                          unembedding[orig_id], unembedding[new_id], hp.erase_scale, hp.update_scale)
        handle.diagnostics.update(
            neurons=chosen, n_neurons=len(chosen),
            erased_token=[tokenizer.decode(e[-1] if isinstance(e[-1], list) else [e[-1]]) for e in edits],
            attributed_to=hp.attribute_to)
        return handle
