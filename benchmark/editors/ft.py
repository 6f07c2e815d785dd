"""Constrained fine-tuning of MLP down-projections (Zhu et al. 2020; FT-L / FT-M as in EasyEdit, Zhang et al. 2024).

Only the weights of ``layers`` (module ``module_template``, default from the architecture table) train.
Objectives:

* ``target_new`` (FT-M, EasyEdit's ``objective_optimization: target_new``): the teacher-forced NLL of every
  target token after the prompt, averaged over the target tokens;
* ``prompt_last_all`` (FT-L as EasyEdit computes it, ``objective_optimization: prompt_last`` in
  easyeditor/models/ft/ft_main.py at 14cea82): the log-probabilities of *all* target tokens read at the
  prompt's last position (no teacher forcing), averaged over the target tokens, then over the requests;
* ``prompt_last`` (editprobe's own FT-L, kept under its name): the NLL of the target's first token at the
  prompt's last position.

After each step the weights are clamped to ``original ± norm_constraint`` (elementwise), the constraint of Zhu
et al. (2020); EasyEdit's shipped FT files set ``norm_constraint: false`` (no clamp), lr 5e-4, 25 steps, and skip
the update once the loss is below 1e-2 (``early_stop_loss``). Presets ``ft-m-easyedit`` and ``ft-l-easyedit``
carry EasyEdit's LLaMA-2-7B file (layer 21); deviations: one request per step (EasyEdit's batch_size 1 as well),
no ``max_length`` truncation of the prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from editprobe.benchmark.editors.base import EditHandle, Editor, EditRequest
from editprobe.benchmark.editors.layers import edit_site
from editprobe.benchmark.metrics import target_token_ids


@dataclass(frozen=True)
class FTHparams:
    RANGES: ClassVar[dict] = {"num_steps": (1, None, False), "lr": (0, None, True), "weight_decay": (0, None, False),
                              "norm_constraint": (0, None, True), "early_stop_loss": (0, None, False)}

    layers: tuple[int, ...] = (8,)
    module_template: str | None = None         # None: the architecture table (benchmark/editors/layers.py)
    objective: Literal["target_new", "prompt_last_all", "prompt_last"] = "target_new"  # FT-M | EasyEdit FT-L | FT-L
    num_steps: int = 25
    lr: float = 5e-4
    weight_decay: float = 0.0
    norm_constraint: float | None = 5e-4
    early_stop_loss: float = 1e-2


def _batch(tokenizer, requests: list[EditRequest], device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded (input_ids, attention_mask, labels) with labels only on the trained target positions."""
    rows, labels = [], []
    for r in requests:
        prompt_ids, target_ids = target_token_ids(tokenizer, r.prompt, r.target)
        rows.append(prompt_ids + target_ids)
        labels.append([-100] * len(prompt_ids) + target_ids)
    width = max(map(len, rows))
    pad = tokenizer.pad_token_id
    ids = torch.tensor([x + [pad] * (width - len(x)) for x in rows], device=device)
    mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in rows], device=device)
    lab = torch.tensor([y + [-100] * (width - len(y)) for y in labels], device=device)
    return ids, mask, lab


def _prompt_last_batch(tokenizer, requests: list[EditRequest], device):
    """(prompt ids right-padded, attention mask, last prompt index per row, target ids padded, target mask)."""
    pairs = [target_token_ids(tokenizer, r.prompt, r.target) for r in requests]
    width = max(len(p) for p, _ in pairs)
    t_width = max(len(t) for _, t in pairs)
    pad = tokenizer.pad_token_id
    ids = torch.tensor([p + [pad] * (width - len(p)) for p, _ in pairs], device=device)
    mask = torch.tensor([[1] * len(p) + [0] * (width - len(p)) for p, _ in pairs], device=device)
    last = torch.tensor([len(p) - 1 for p, _ in pairs], device=device)
    targets = torch.tensor([t + [0] * (t_width - len(t)) for _, t in pairs], device=device)
    t_mask = torch.tensor([[1.0] * len(t) + [0.0] * (t_width - len(t)) for _, t in pairs], device=device)
    return ids, mask, last, targets, t_mask


def prompt_last_all_loss(model, ids, mask, last, targets, t_mask) -> torch.Tensor:
    """EasyEdit's FT-L loss: -mean_j log p(target_j | prompt) with every target token scored at the prompt's
    last position, averaged over the target tokens of a row, then over the rows."""
    logits = model(input_ids=ids, attention_mask=mask).logits[torch.arange(len(ids), device=ids.device), last]
    logp = torch.log_softmax(logits.float(), dim=-1).gather(1, targets)                     # [rows, t]
    return (-(logp * t_mask).sum(1) / t_mask.sum(1)).mean()


class FTEditor(Editor):
    row_batchable = True
    name = "ft"
    modes = ("single", "sequential", "batch")
    Hparams = FTHparams

    def apply(self, model, tokenizer, requests: list[EditRequest]) -> EditHandle:
        hp = self.hparams
        names = [edit_site(model, layer, hp.module_template).weight_name for layer in hp.layers]
        handle = EditHandle(model, names)
        params = dict(model.named_parameters())
        weights = [params[n] for n in names]
        originals = [w.detach().clone() for w in weights]
        frozen = {n: p.requires_grad for n, p in params.items()}
        for p in params.values():
            p.requires_grad_(False)
        for w in weights:
            w.requires_grad_(True)
        ids, mask, labels = _batch(tokenizer, requests, weights[0].device)
        if hp.objective == "prompt_last":  # keep only the first target token of each row
            first = (labels != -100).float().argmax(dim=1)
            keep = torch.zeros_like(labels, dtype=torch.bool)
            keep[torch.arange(len(labels)), first] = True
            labels = labels.masked_fill(~keep, -100)
        if hp.objective == "prompt_last_all":
            prompt_last = _prompt_last_batch(tokenizer, requests, weights[0].device)
        opt = torch.optim.Adam(weights, lr=hp.lr, weight_decay=hp.weight_decay)
        losses = []
        try:
            for _ in range(hp.num_steps):
                opt.zero_grad()
                if hp.objective == "prompt_last_all":
                    loss = prompt_last_all_loss(model, *prompt_last)
                else:
                    loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
                losses.append(float(loss.detach()))
                if losses[-1] < hp.early_stop_loss:
                    break
                loss.backward()
                opt.step()
                if hp.norm_constraint is not None:
                    with torch.no_grad():
                        for w, w0 in zip(weights, originals):
                            w.copy_(torch.clamp(w, w0 - hp.norm_constraint, w0 + hp.norm_constraint))
        except BaseException:
            handle.restore()  # an interrupted fine-tune leaves the model as it found it
            raise
        finally:
            for n, p in params.items():
                p.requires_grad_(frozen[n])
                p.grad = None
        with torch.no_grad():
            handle.diagnostics.update(
                steps=len(losses), loss_first=losses[0], loss_last=losses[-1],
                delta_norm={n: float((w - w0).norm()) for n, w, w0 in zip(names, weights, originals)})
        return handle
