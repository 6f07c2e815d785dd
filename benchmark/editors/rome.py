"""ROME: rank-one model editing of one MLP output projection (Meng et al. 2022a, "Locating and Editing Factual
Associations in GPT").

The MLP's second matrix ``W`` (``d_out x d_in``) is read as a key-value memory. An edit (s, r, o -> o*) writes

* the key ``k*`` — the matrix's input at the subject's last token, averaged over context prefixes (Eq. 3,
  :func:`compute_ks`);
* the value ``v*`` — the matrix output that makes the model say the new object: ``v* = v_init + delta`` with
  ``delta`` minimising the target NLL over the context-prefixed prompts, plus ``kl_factor`` times the KL of the
  ``"{subject} is a"`` next-token distribution from its unedited value, plus a weight decay, with
  ``||delta|| <= clamp_norm_factor * ||v_init||`` (Eq. 4, :func:`compute_v`);
* the rank-one update ``W' = W + (v* - W k*) (C^-1 k*)^T / ((C^-1 k*)^T k*)`` with ``C = E[k k^T]`` the keys'
  second moment (Eq. 2 and Appendix A; seed Appendix E.1, :func:`rank_one_update`); ``mom2_adjustment: false``
  takes ``C = I``. ``written_key: prompt`` writes the bare edit prompt's key instead of ``k*`` (along the same
  direction ``C^-1 k*``), as the reference implementation's ``compute_v`` does: the edit prompt then reads
  exactly ``v*``.

Speed: while ``delta`` is optimised nothing below the edited layer changes, so the layers underneath run once
(:class:`UpperLayers` captures the input of the edited block and the arguments of every block above it) and each
step runs only the edited block and those above it. ``skip_lower_layers: false`` restores ROME's full forward
pass per step (same result up to float rounding).

MEMIT and AlphaEdit reuse the key, target and layer-skipping pieces from here.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F

from editprobe.benchmark.editors.base import EditHandle, Editor, EditRequest
from editprobe.benchmark.editors.context import context_templates, model_cache_name
from editprobe.benchmark.editors.covariance import SecondMoment, second_moments
from editprobe.benchmark.editors.layers import EditSite, Layout, decoder_blocks, edit_site, get_module, resolve_layout
from editprobe.benchmark.metrics import target_token_ids

log = logging.getLogger("editprobe.run")


@dataclass(frozen=True)
class LocateEditHparams:
    """What ROME, MEMIT and AlphaEdit share: the target-vector optimisation, key statistics, context templates."""

    RANGES: ClassVar[dict] = {"v_num_grad_steps": (1, None, False), "v_lr": (0, None, True),
                              "v_weight_decay": (0, None, False), "clamp_norm_factor": (0, None, True),
                              "kl_factor": (0, None, False), "v_early_stop_loss": (0, None, False),
                              "mom2_n_samples": (1, None, False), "mom2_sample_tokens": (1, None, False)}

    layers: tuple[int, ...] = (5,)
    module_template: str | None = None        # None: from model.config.model_type (editprobe.benchmark.editors.layers)
    v_num_grad_steps: int = 20
    v_lr: float = 0.5
    v_weight_decay: float = 0.5
    clamp_norm_factor: float = 4.0
    kl_factor: float = 0.0625
    v_early_stop_loss: float = 0.05           # the optimisation stops once the total loss is below this
    mom2_dataset: str = "self"                # "self" | local .txt/.jsonl file or folder | HF dataset[:config]
    mom2_n_samples: int = 300
    mom2_dtype: Literal["float32", "float64"] = "float32"
    mom2_sample_tokens: int = 128             # tokens per text (self-sampled length, truncation otherwise)
    context_template_length_params: tuple = ((10, 5),)   # (new tokens, count) of sampled context prefixes
    seed: int = 0                             # context templates and the self corpus
    skip_lower_layers: bool = True            # run only the edited block and those above it while optimising
    stats_dir: str | None = None              # None: {cache_dir}/stats
    cache_dir: str | None = None              # None: the editprobe cache ($EDITPROBE_CACHE, ~/.cache/editprobe)

    def __post_init__(self):  # YAML gives [[10, 5]]: keep the frozen dataclass hashable
        object.__setattr__(self, "context_template_length_params",
                           tuple(tuple(p) for p in self.context_template_length_params))


@dataclass(frozen=True)
class ROMEHparams(LocateEditHparams):
    layers: tuple[int, ...] = (5,)            # one layer in the paper; several are edited one after another
    mom2_adjustment: bool = True              # False: C = I (plain least-norm rank-one update)
    written_key: Literal["average", "prompt"] = "average"   # "average": W' k* = v* (Eq. 2); "prompt": W' k(prompt) = v*


# --------------------------------------------------------------------------- prompts and token positions

def subject_span(prompt: str, subject: str) -> tuple[int, int]:
    """Character span of the first occurrence of ``subject`` in ``prompt`` (case-insensitive if need be)."""
    start = prompt.find(subject)
    if start < 0:
        start = prompt.lower().find(subject.lower())
    if start < 0 or not subject:
        raise ValueError(f"subject {subject!r} does not occur in the edit prompt {prompt!r}")
    return start, start + len(subject)


def subject_last_token(tokenizer, text: str, subject_end: int) -> int:
    """Index of the token holding the subject's last character (ROME's ``subject_last`` fact token)."""
    if getattr(tokenizer, "is_fast", False):
        offsets = tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
        hits = [i for i, (s, e) in enumerate(offsets) if e > s and s < subject_end]
        if hits:
            return hits[-1]
    return len(tokenizer(text[:subject_end])["input_ids"]) - 1


def contextualise(template: str, prompt: str) -> tuple[str, int]:
    """``template`` ("<prefix>. {}") with the prompt in place of ``{}``, and the offset where the prompt starts."""
    at = template.index("{}")
    return template[:at] + prompt + template[at + 2:], at


@dataclass
class PromptBatch:
    """Right-padded prompts with the subject's last token of each row and the teacher-forced target positions."""

    ids: torch.Tensor                       # [B, T]
    mask: torch.Tensor                      # [B, T]
    lookup: torch.Tensor                    # [B] subject-last token per row
    label_rows: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))  # [N]
    label_pos: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))   # [N]
    label_ids: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))   # [N]


def _pad(rows: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.tensor([r + [pad_id] * (width - len(r)) for r in rows], device=device)
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device)
    return ids, mask


def key_batch(tokenizer, requests: list[EditRequest], templates: list[str], device) -> PromptBatch:
    """One row per request (outer) and template (inner): the template around the bare prompt, no target."""
    rows, lookup = [], []
    for r in requests:
        _, end = subject_span(r.prompt, r.subject)
        for t in templates:
            text, at = contextualise(t, r.prompt)
            rows.append(tokenizer(text)["input_ids"])
            lookup.append(subject_last_token(tokenizer, text, at + end))
    ids, mask = _pad(rows, _pad_id(tokenizer), device)
    return PromptBatch(ids, mask, torch.tensor(lookup, device=device))


@dataclass
class TargetBatch:
    """ROME's optimisation rows for several requests, request after request, in one right-padded batch."""

    rows: PromptBatch
    owner: torch.Tensor            # [B] the request each row belongs to
    label_owner: torch.Tensor      # [N] the request each teacher-forced position belongs to
    first_rows: torch.Tensor       # [n] each request's plain-prompt row (the first template's), where v_init is read
    kl_rows: torch.Tensor          # [n] each request's essence row
    target_lens: list[int]         # [n] target tokens per request


def target_batch(tokenizer, requests: list[EditRequest], templates: list[str], device) -> TargetBatch:
    """ROME's optimisation batch: per request, one row per template (prompt + target minus its last token) and
    the KL row ``"{subject} is a"``; the requests follow one another.

    Targets are tokenised as ``editprobe.benchmark.metrics`` scores them (prompt and ``" " + target`` together), so the
    optimised positions are exactly the ones Edit Success reads.
    """
    rows, lookup, owner, lrow, lpos, lid, lown, first, kl, lens = [], [], [], [], [], [], [], [], [], []
    for b, request in enumerate(requests):
        _, end = subject_span(request.prompt, request.subject)
        first.append(len(rows))
        for t in templates:
            text, at = contextualise(t, request.prompt)
            prompt_ids, target_ids = target_token_ids(tokenizer, text, request.target)
            for j, tok in enumerate(target_ids):
                lrow.append(len(rows))
                lpos.append(len(prompt_ids) - 1 + j)   # the position that predicts target token j
                lid.append(tok)
                lown.append(b)
            rows.append(prompt_ids + target_ids[:-1])
            lookup.append(subject_last_token(tokenizer, text, at + end))
            owner.append(b)
        lens.append(len(target_ids))
        kl_text = f"{request.subject} is a"                # ROME's essence prompt
        kl.append(len(rows))
        rows.append(tokenizer(kl_text)["input_ids"])
        lookup.append(subject_last_token(tokenizer, kl_text, len(request.subject)))
        owner.append(b)
    ids, mask = _pad(rows, _pad_id(tokenizer), device)
    as_t = lambda xs: torch.tensor(xs, device=device, dtype=torch.long)  # noqa: E731
    return TargetBatch(PromptBatch(ids, mask, as_t(lookup), as_t(lrow), as_t(lpos), as_t(lid)), as_t(owner),
                       as_t(lown), as_t(first), as_t(kl), lens)


def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0  # masked out, any id will do


# --------------------------------------------------------------------------- keys

@torch.no_grad()
def compute_ks(model, tokenizer, site: EditSite, requests: list[EditRequest], template_groups: list[list[str]],
               batch_size: int = 32) -> torch.Tensor:
    """Keys ``k*`` of ``requests`` at ``site``: its input at the subject's last token, averaged over contexts.

    ROME Eq. 3: ``k* = 1/N sum_j k(x_j + s)``. With several template groups the mean is taken within each group
    and then over groups (MEMIT's ``compute_ks``); ROME passes one flat group. Returns ``[n_requests, d_in]``.
    """
    device = next(model.parameters()).device
    flat = [t for g in template_groups for t in g]
    batch = key_batch(tokenizer, requests, flat, device)
    chunks: list[torch.Tensor] = []
    captured: list[torch.Tensor] = []
    handle = site.module.register_forward_pre_hook(lambda m, args: captured.append(args[0].detach()))
    try:
        for s in range(0, len(batch.ids), batch_size):
            captured.clear()
            model(input_ids=batch.ids[s:s + batch_size], attention_mask=batch.mask[s:s + batch_size],
                  use_cache=False)
            k = captured[0]                                                         # [b, T, d_in]
            chunks.append(k[torch.arange(len(k)), batch.lookup[s:s + batch_size]])  # [b, d_in]
    finally:
        handle.remove()
    keys = torch.cat(chunks)                                                    # [n * m, d_in]
    keys = keys.view(len(requests), len(flat), -1)                              # [n, m, d_in]
    bounds = torch.tensor([0] + [len(g) for g in template_groups]).cumsum(0).tolist()
    groups = [keys[:, a:b].mean(1) for a, b in zip(bounds[:-1], bounds[1:])]    # each [n, d_in]
    return torch.stack(groups).mean(0)                                          # [n, d_in]


# --------------------------------------------------------------------------- running only the upper layers

class UpperLayers:
    """The blocks from ``start`` up, fed from one cached pass through the blocks below (they do not change).

    One full forward pass (no gradient) records the hidden state entering block ``start`` and the keyword
    arguments (mask, rotary embeddings, positions) every block from ``start`` up was called with; :meth:`run`
    replays those blocks on the recorded state, so hooks inside them (the ``delta`` insertion) act as usual.
    """

    def __init__(self, model, layout: Layout, ids: torch.Tensor, mask: torch.Tensor, start: int):
        blocks = decoder_blocks(model, layout)
        self.blocks = list(blocks)[start:]
        self.norm = get_module(model, layout.final_norm)
        self.head = model.get_output_embeddings()
        self.calls: list[tuple[tuple, dict]] = []

        def record(module, args, kwargs):
            self.calls.append((args, dict(kwargs)))

        handles = [b.register_forward_pre_hook(record, with_kwargs=True) for b in self.blocks]
        try:
            with torch.no_grad():
                model(input_ids=ids, attention_mask=mask, use_cache=False)
        finally:
            for h in handles:
                h.remove()
        if len(self.calls) != len(self.blocks):
            raise RuntimeError(f"expected one call per upper block, recorded {len(self.calls)} for {len(self.blocks)}")
        first_args, first_kwargs = self.calls[0]
        self.hidden = (first_args[0] if first_args else first_kwargs["hidden_states"]).detach()   # [B, T, d]

    def run(self) -> torch.Tensor:
        """The last block's output ``[B, T, d]`` (before the final norm)."""
        h = self.hidden
        for block, (args, kwargs) in zip(self.blocks, self.calls):
            out = block(h, *args[1:], **kwargs) if args else block(**{**kwargs, "hidden_states": h})
            h = out[0] if isinstance(out, tuple) else out
        return h

    def logits_at(self, rows: torch.Tensor, pos: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(hidden[rows, pos]))                              # [N, V]


@contextlib.contextmanager
def frozen_parameters(model):
    """No parameter collects gradients while a target vector is optimised (restored afterwards)."""
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(flags[n])


@dataclass
class TargetVector:
    """The optimised output ``init + delta`` of the insertion module at the subject's last token."""

    value: torch.Tensor        # [d]
    init: torch.Tensor         # [d]
    delta_norm: float
    nll: list[float]
    steps: int
    seconds: float
    skipped_lower_layers: bool
    loss_last: float = float("nan")   # the total loss at the last step (early stop: below v_early_stop_loss)
    batch: int = 1                    # requests optimised together (seconds: the batch's time over them)


def optimise_target(model, tokenizer, request: EditRequest, templates: list[str], insert_at: torch.nn.Module,
                    start_block: int, layout: Layout, hp, extra_loss=None) -> TargetVector:
    """``init + delta`` at ``insert_at``'s output (subject-last token of every row), ROME Eq. 4 / MEMIT Eq. 16.

    ``delta`` minimises the mean over prompts of the target NLL (per target token), plus
    ``kl_factor * KL(p_delta || p_0)`` of the next-token distribution after the subject in ``"{s} is a"``, plus
    ``v_weight_decay * ||delta|| / ||init||^2``; Adam with ``v_lr``; after each step ``delta`` is scaled back into
    the ball ``||delta|| <= clamp_norm_factor * ||init||``. ``insert_at`` sits in block ``start_block``.
    ``extra_loss(delta, init)``, when given, is added to the loss (the preservation diagnostic's beta L_kp).
    """
    return optimise_targets(model, tokenizer, [request], templates, insert_at, start_block, layout, hp,
                            extra_loss)[0]


def optimise_targets(model, tokenizer, requests: list[EditRequest], templates: list[str], insert_at: torch.nn.Module,
                     start_block: int, layout: Layout, hp, extra_loss=None) -> list[TargetVector]:
    """:func:`optimise_target` for several requests at once, each as if alone: one batched optimisation.

    The requests' problems are independent: row r of the batch inserts ``delta[owner[r]]`` at its own subject
    token, each request's loss reads only its own rows, and Adam works element by element, so the gradient and
    every step of ``delta[b]`` are those of request b optimised alone (up to float rounding: the batch pads to
    its longest row and sums over more rows). A request stops, as alone, at the first step whose loss is below
    ``v_early_stop_loss`` or at the last step; it is frozen from then on while the others go on. The clamp is
    per request. One request takes exactly the one-at-a-time arithmetic. ``extra_loss`` needs a single request.
    """
    if hp.v_num_grad_steps < 1:
        raise ValueError(f"v_num_grad_steps must be at least 1, got {hp.v_num_grad_steps}")
    if not requests:
        return []
    n = len(requests)
    if extra_loss is not None and n != 1:
        raise ValueError("extra_loss is defined for one request at a time")
    t0 = time.perf_counter()
    device = next(model.parameters()).device
    tb = target_batch(tokenizer, requests, templates, device)
    batch = tb.rows
    n_rewrite = len(templates)
    rows = torch.arange(len(batch.ids), device=device)
    width = model.get_output_embeddings().weight.shape[1]          # residual width = the inserted vector's size
    # delta is optimised in float32 whatever the model's dtype (in float16 Adam's eps underflows and the first
    # step turns delta into NaN); it is cast to the activations' dtype where it is inserted.
    delta = torch.zeros(n, width, dtype=torch.float32, device=device, requires_grad=True)   # [n, d]
    init: list[torch.Tensor] = []
    labels = [torch.nonzero(tb.label_owner == b).flatten() for b in range(n)]

    def insert(module, args, out):
        h = out[0] if isinstance(out, tuple) else out                            # [B, T, d]
        if not init:                                                             # v_init: each plain prompt
            init.append(h[tb.first_rows, batch.lookup[tb.first_rows]].detach().float().clone())   # [n, d]
        at = torch.zeros(h.shape[:2] + (1,), dtype=h.dtype, device=h.device)    # [B, T, 1]
        at[rows, batch.lookup] = 1
        added = delta[0] if n == 1 else delta[tb.owner].unsqueeze(1)            # [d] or [B, 1, d]
        h = h + at * added.to(h.dtype)
        return (h,) + tuple(out[1:]) if isinstance(out, tuple) else h

    skip = bool(hp.skip_lower_layers and layout.final_norm is not None)
    handle = insert_at.register_forward_hook(insert)
    traces: list[list[float]] = [[] for _ in range(n)]
    steps, loss_last = [0] * n, [float("nan")] * n
    done = [False] * n
    try:
        with frozen_parameters(model):
            upper = UpperLayers(model, layout, batch.ids, batch.mask, start_block) if skip else None
            opt = torch.optim.Adam([delta], lr=hp.v_lr)
            kl_init = None
            for it in range(hp.v_num_grad_steps):
                opt.zero_grad()
                if upper is not None:
                    hidden = upper.run()
                    logits = upper.logits_at(batch.label_rows, batch.label_pos, hidden)            # [N, V]
                    kl_logits = upper.logits_at(tb.kl_rows, batch.lookup[tb.kl_rows], hidden)     # [n, V]
                else:  # ROME's original: the whole model every step
                    full = model(input_ids=batch.ids, attention_mask=batch.mask, use_cache=False).logits
                    logits = full[batch.label_rows, batch.label_pos]
                    kl_logits = full[tb.kl_rows, batch.lookup[tb.kl_rows]]
                v_init = init[0]                                                                   # [n, d]
                log_probs = logits.float().log_softmax(-1)
                token_nll = -log_probs[torch.arange(len(logits)), batch.label_ids]                 # [N]
                kl_log_probs = kl_logits.float().log_softmax(-1)                                   # [n, V]
                if kl_init is None:
                    kl_init = kl_log_probs.detach().clone()
                total = None
                for b in range(n):
                    if done[b]:
                        continue
                    own = token_nll if n == 1 else token_nll[labels[b]]
                    nll = own.sum() / (n_rewrite * tb.target_lens[b])   # mean over prompts of the per-token NLL
                    kl = hp.kl_factor * F.kl_div(kl_init[b:b + 1], kl_log_probs[b:b + 1], log_target=True,
                                                 reduction="batchmean")
                    decay = hp.v_weight_decay * (delta[b].norm() / v_init[b].norm() ** 2)
                    loss = nll + kl + decay
                    if extra_loss is not None:
                        loss = loss + extra_loss(delta[0], v_init[0])
                    traces[b].append(float(nll.detach()))
                    loss_last[b] = float(loss.detach())
                    steps[b] = it + 1
                    if loss_last[b] < hp.v_early_stop_loss or it == hp.v_num_grad_steps - 1:
                        done[b] = True                 # this request's delta is final: frozen from here on
                        continue
                    total = loss if total is None else total + loss
                if total is None:
                    break
                total.backward()
                frozen = [b for b in range(n) if done[b]]
                kept = delta.detach()[frozen].clone() if frozen else None
                opt.step()
                with torch.no_grad():
                    if frozen:                         # Adam's momentum would still move a frozen request
                        delta[frozen] = kept
                    for b in range(n):
                        if done[b]:
                            continue
                        max_norm = hp.clamp_norm_factor * v_init[b].norm()
                        if delta[b].norm() > max_norm:
                            delta[b].mul_(max_norm / delta[b].norm())
    finally:
        handle.remove()
    v_init = init[0]
    delta = delta.detach()
    seconds = (time.perf_counter() - t0) / n
    return [TargetVector(v_init[b] + delta[b], v_init[b], float(delta[b].norm()), traces[b], steps[b], seconds,
                         skip, loss_last[b], n) for b in range(n)]


def compute_v(model, tokenizer, request: EditRequest, site: EditSite, templates: list[str], layout: Layout,
              hp, extra_loss=None) -> TargetVector:
    """ROME's value ``v*`` (Eq. 4): the optimised output of the edited matrix ``site`` at the subject token."""
    return optimise_target(model, tokenizer, request, templates, site.module, site.layer, layout, hp, extra_loss)


# --------------------------------------------------------------------------- the update

def rank_one_update(k_star: torch.Tensor, v_star: torch.Tensor, w_k: torch.Tensor,
                    second_moment: torch.Tensor | None,
                    key: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ROME Eq. 2 (seed Appendix E.1): ``Delta = (v* - W k*) (C^-1 k*)^T / ((C^-1 k*)^T k*)``.

    ``w_k`` is the matrix's current output for the written key (``W k*``, plus its bias if any), so
    ``(W + Delta) k* = v*`` exactly, and every ``x`` with ``(C^-1 k*)^T x = 0`` keeps its output.
    ``second_moment`` is ``C = E[k k^T]`` (``[d_in, d_in]``), or None for ``C = I``.
    ``key``, when given, is written instead of ``k*`` along the same direction ``C^-1 k*``:
    ``Delta = (v* - W key) (C^-1 k*)^T / ((C^-1 k*)^T key)``, so ``(W + Delta) key = v*`` (the reference code's
    choice, with ``key`` the bare edit prompt's key); ``w_k`` is then ``W key``.
    Returns ``(Delta [d_out, d_in], right vector [d_out], left vector C^-1 k* [d_in])``, in float64 on the device
    of ``k_star`` (the model's): every other input is moved there first, wherever it was computed or loaded.
    """
    at = dict(device=k_star.device, dtype=torch.float64)
    k = k_star.to(**at)                                                           # [d_in]
    written = k if key is None else key.to(**at)                                  # [d_in]
    left = k if second_moment is None else torch.linalg.solve(second_moment.to(**at), k)   # C^-1 k*  [d_in]
    right = (v_star.to(**at) - w_k.to(**at)) / (left @ written)                   # [d_out]
    return torch.outer(right, left), right, left


# --------------------------------------------------------------------------- the editor

@dataclass
class _Timing:
    seconds: float = 0.0


class LocateEditEditor(Editor):
    """What ROME, MEMIT and AlphaEdit share: the cache folders, context templates and key statistics.

    Templates and second moments are cached on disk (per model) and, once read, on the instance.
    """
    row_batchable = True
    #: Requests whose target vectors one batched optimisation (:func:`optimise_targets`) computes together when
    #: one call edits several (MEMIT and AlphaEdit in batch mode). The runner sets it to the device's edit batch;
    #: 1 optimises them one after another, as the reference implementations do.
    target_batch: int = 1

    def __init__(self, hparams=None, **overrides):
        super().__init__(hparams, **overrides)
        self._templates: dict[str, list[list[str]]] = {}
        self._moments: dict[tuple[str, str], SecondMoment] = {}
        self._ready: dict[tuple, TargetVector] = {}

    def target_insertion(self, model, layout: Layout) -> tuple[torch.nn.Module, int]:
        """Where the editor's first target vector is inserted, and the block it sits in."""
        raise NotImplementedError

    def _ready_key(self, request: EditRequest, module: torch.nn.Module, templates: list[str]) -> tuple:
        return request, id(module), tuple(templates)

    def targets(self, model, tokenizer, requests: list[EditRequest], templates: list[str],
                layout: Layout) -> list[TargetVector]:
        """The first target vector of each request, all on the weights as they are now: taken from
        :meth:`batched_targets` where it prepared one, the rest optimised ``target_batch`` at a time."""
        module, layer = self.target_insertion(model, layout)
        out = [self._ready.pop(self._ready_key(r, module, templates), None) for r in requests]
        missing = [i for i, v in enumerate(out) if v is None]
        size = max(1, int(self.target_batch))
        for s in range(0, len(missing), size):
            chunk = missing[s:s + size]
            found = optimise_targets(model, tokenizer, [requests[i] for i in chunk], templates, module, layer,
                                     layout, self.hparams)
            for i, v in zip(chunk, found):
                out[i] = v
        return out

    @contextlib.contextmanager
    def batched_targets(self, model, tokenizer, requests: list[EditRequest]):
        """Within the block, :meth:`apply` of any one of ``requests`` alone finds its first target vector ready:
        optimised ``target_batch`` at a time (:func:`optimise_targets`) on the weights as they are on entry;
        with ``target_batch`` 1 nothing is prepared.

        For single edits measured many at a time (``editprobe.benchmark.modes.score_records``): every apply
        inside must start from these weights (the caller restores each edit before the next). If the batch
        cannot be built (a request whose subject is not in its prompt), nothing is prepared and each apply
        optimises its own target, so a bad record fails alone. Returns the batch's seconds (``.seconds``).
        """
        timing = _Timing()
        t0 = time.perf_counter()
        try:
            if int(self.target_batch) > 1 and len(requests) > 1:
                layout = resolve_layout(model, self.hparams.module_template)
                templates = [t for g in self.template_groups(model, tokenizer) for t in g]
                module, _ = self.target_insertion(model, layout)
                found = self.targets(model, tokenizer, requests, templates, layout)   # target_batch at a time
                self._ready = {self._ready_key(r, module, templates): v for r, v in zip(requests, found)}
        except Exception as exc:   # noqa: BLE001 - each apply then meets its own error
            log.warning("no batched targets for %d requests (%s: %s); each edit optimises its own",
                        len(requests), type(exc).__name__, exc)
            self._ready = {}
        timing.seconds = time.perf_counter() - t0
        try:
            yield timing
        finally:
            self._ready = {}

    @property
    def cache_dir(self) -> Path:
        """The ``cache_dir`` hyper-parameter, else the run's cache root, else editprobe's default cache."""
        from editprobe.paths import default_cache_dir

        root = self.hparams.cache_dir or self.cache_root
        return Path(root) if root else default_cache_dir()

    @property
    def stats_dir(self) -> Path:
        return Path(self.hparams.stats_dir) if self.hparams.stats_dir else self.cache_dir / "stats"

    def template_groups(self, model, tokenizer) -> list[list[str]]:
        """``[["{}"], [samples of the first length], ...]`` for this model."""
        key = model_cache_name(model)
        if key not in self._templates:
            flat = context_templates(model, tokenizer, self.cache_dir, self.hparams.context_template_length_params,
                                     seed=self.hparams.seed)
            groups, at = [flat[:1]], 1
            for _, count in self.hparams.context_template_length_params:
                groups.append(flat[at:at + count])
                at += count
            self._templates[key] = [g for g in groups if g]
        return self._templates[key]

    def second_moments(self, model, tokenizer, sites: list[EditSite]) -> dict[str, SecondMoment]:
        hp = self.hparams
        name = model_cache_name(model)
        todo = [s for s in sites if (name, s.name) not in self._moments]
        if todo:
            found = second_moments(model, tokenizer, todo, corpus=hp.mom2_dataset, n_samples=hp.mom2_n_samples,
                                   dtype=hp.mom2_dtype, stats_dir=self.stats_dir, seed=hp.seed,
                                   sample_tokens=hp.mom2_sample_tokens)
            self._moments.update({(name, k): v for k, v in found.items()})
        return {s.name: self._moments[(name, s.name)] for s in sites}


class ROMEEditor(LocateEditEditor):
    name = "rome"
    modes = ("single", "sequential")
    Hparams = ROMEHparams

    def apply(self, model, tokenizer, requests: list[EditRequest]) -> EditHandle:
        hp = self.hparams
        t_start = time.perf_counter()
        layout = resolve_layout(model, hp.module_template)
        sites = [edit_site(model, layer, hp.module_template) for layer in sorted(hp.layers)]
        handle = EditHandle(model, [s.weight_name for s in sites])
        try:
            groups = self.template_groups(model, tokenizer)
            templates = [t for g in groups for t in g]
            t_ctx = time.perf_counter()
            moments = self.second_moments(model, tokenizer, sites) if hp.mom2_adjustment else {}
            t_cov = time.perf_counter()
            # one after another, each seeing the last; only the first write meets the weights a prepared
            # (batched) target was optimised on
            edits = [self.write(model, tokenizer, request, site, templates, layout, moments, first=(i, j) == (0, 0))
                     for i, request in enumerate(requests) for j, site in enumerate(sites)]
        except BaseException:
            handle.restore()  # a failed edit leaves no half-written weights behind
            raise
        handle.diagnostics.update(
            method="ROME", layers=[s.layer for s in sites], modules=[s.name for s in sites],
            corpus=({k: m.provenance() for k, m in moments.items()} if moments else "identity (mom2_adjustment: false)"),
            context_templates=len(templates), skip_lower_layers=all(e["skipped_lower_layers"] for e in edits),
            right_vector_norm=[e["right_vector_norm"] for e in edits],
            residual_norm=[e["residual_norm"] for e in edits], edits=edits,
            seconds={"templates": t_ctx - t_start, "covariance": t_cov - t_ctx,
                     "total": time.perf_counter() - t_start})
        return handle

    def target_insertion(self, model, layout: Layout) -> tuple[torch.nn.Module, int]:
        site = edit_site(model, min(self.hparams.layers), self.hparams.module_template)
        return site.module, site.layer

    def write(self, model, tokenizer, request: EditRequest, site: EditSite, templates: list[str], layout: Layout,
              moments: dict[str, SecondMoment], first: bool = False) -> dict:
        """One rank-one edit of ``site`` for ``request``; returns its diagnostics. ``first``: nothing has been
        written yet in this apply, so a target :meth:`batched_targets` prepared may be used."""
        t0 = time.perf_counter()
        k_star = compute_ks(model, tokenizer, site, [request], [templates])[0]                  # [d_in]
        key = (compute_ks(model, tokenizer, site, [request], [["{}"]])[0]
               if self.hparams.written_key == "prompt" else None)                               # [d_in]
        t1 = time.perf_counter()
        v = self._ready.pop(self._ready_key(request, site.module, templates), None) if first else None
        if v is None:
            v = compute_v(model, tokenizer, request, site, templates, layout, self.hparams)
        t2 = time.perf_counter()
        with torch.no_grad():
            w_k = site.module((k_star if key is None else key).unsqueeze(0))[0]                 # [d_out]
            moment = moments[site.name].moment() if site.name in moments else None
            delta, right, left = rank_one_update(k_star, v.value, w_k, moment, key)
            site.add_(delta)
        return {"record_id": request.record_id, "layer": site.layer,
                "right_vector_norm": float(right.norm()), "residual_norm": float((v.value - w_k).norm()),
                "left_vector_norm": float(left.norm()), "v_init_norm": float(v.init.norm()),
                "v_delta_norm": v.delta_norm, "nll_first": v.nll[0], "nll_last": v.nll[-1], "v_steps": v.steps,
                "v_batch": v.batch, "skipped_lower_layers": v.skipped_lower_layers,
                "seconds": {"keys": t1 - t0, "v": v.seconds, "update": time.perf_counter() - t2}}
