"""MEMIT: mass editing of a range of MLP layers (Meng et al. 2022b, "Mass-Editing Memory in a Transformer").

For each request, a target hidden state ``z*`` is optimised at the output of the LAST edited block (the residual
stream at the subject's last token; Eq. 16, :func:`compute_z` — ROME's objective with the vector inserted into
the block output instead of the MLP output). Then, for the edited layers from the lowest up (Alg. 1):

* ``K`` — the layer's keys for every request (ROME's context-averaged ``k*``, ``[n, d_in]``);
* ``R`` — the remaining error ``z* - z`` at the last edited block, read again after the lower layers' updates,
  divided by the number of layers still to edit, so the residual is spread evenly over them (Eq. 18-20);
* ``Delta = R^T K (lambda C + K^T K)^-1`` — the least-squares update that writes the new pairs while keeping the
  outputs of the ``lambda C`` mass of preserved keys (Eq. 14; seed Appendix B.2.1/E.2,
  :func:`least_squares_update`), ``C = E[k k^T]`` from :mod:`editprobe.benchmark.editors.covariance` and
  ``lambda = mom2_update_weight``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

import torch

from editprobe.benchmark.editors.base import EditHandle, EditRequest
from editprobe.benchmark.editors.layers import Layout, decoder_blocks, edit_site, resolve_layout
from editprobe.benchmark.editors.rome import (LocateEditEditor, LocateEditHparams, TargetVector, compute_ks, key_batch,
                                              optimise_target)


@dataclass(frozen=True)
class MEMITHparams(LocateEditHparams):
    RANGES: ClassVar[dict] = {"mom2_update_weight": (0, None, False)}

    layers: tuple[int, ...] = (4, 5, 6, 7, 8)
    v_num_grad_steps: int = 25
    clamp_norm_factor: float = 0.75
    mom2_adjustment: bool = True              # False: C = I
    mom2_update_weight: float = 15000.0       # lambda


def compute_z(model, tokenizer, request: EditRequest, layer: int, templates: list[str], layout: Layout,
              hp) -> TargetVector:
    """MEMIT's target ``z*`` (Eq. 16): the optimised output of block ``layer`` at the subject's last token."""
    block = decoder_blocks(model, layout)[layer]
    return optimise_target(model, tokenizer, request, templates, block, layer, layout, hp)


@torch.no_grad()
def block_outputs(model, tokenizer, layout: Layout, layer: int, requests: list[EditRequest]) -> torch.Tensor:
    """Output of block ``layer`` at the subject's last token of each bare edit prompt, ``[n, d]``."""
    device = next(model.parameters()).device
    batch = key_batch(tokenizer, requests, ["{}"], device)
    captured: list[torch.Tensor] = []

    def grab(module, args, out):
        captured.append((out[0] if isinstance(out, tuple) else out).detach())

    handle = decoder_blocks(model, layout)[layer].register_forward_hook(grab)
    try:
        model(input_ids=batch.ids, attention_mask=batch.mask, use_cache=False)
    finally:
        handle.remove()
    return captured[0][torch.arange(len(requests)), batch.lookup]


def least_squares_update(keys: torch.Tensor, resid: torch.Tensor, second_moment: torch.Tensor | None,
                         weight: float) -> torch.Tensor:
    """MEMIT Eq. 14 (seed Appendix B.2.1/E.2): ``Delta = R K^T (lambda C + K K^T)^-1`` with keys as columns.

    ``keys`` ``[n, d_in]`` and ``resid`` ``[n, d_out]`` hold one request per row; ``second_moment`` is ``C``
    (``[d_in, d_in]``) or None for ``C = I``. ``Delta`` solves the normal equations
    ``Delta (lambda C + K K^T) = R K^T``. Returns ``Delta`` ``[d_out, d_in]`` in float64 on the keys' device (the
    model's); ``C`` and ``R`` are moved there first.
    """
    at = dict(device=keys.device, dtype=torch.float64)
    k = keys.to(**at).T                                                        # [d_in, n]
    c = torch.eye(k.shape[0], **at) if second_moment is None else second_moment.to(**at)
    a = weight * c + k @ k.T                                                   # [d_in, d_in], symmetric
    return torch.linalg.solve(a, k @ resid.to(**at)).T                         # [d_out, d_in]


def spread_residual(z_star: torch.Tensor, z_now: torch.Tensor, layers_left: int) -> torch.Tensor:
    """MEMIT Eq. 20: the share of the remaining error ``z* - z`` this layer writes (``[n, d]``)."""
    return (z_star - z_now) / layers_left


class MEMITEditor(LocateEditEditor):
    name = "memit"
    modes = ("single", "sequential", "batch")
    Hparams = MEMITHparams

    def target_insertion(self, model, layout: Layout) -> tuple[torch.nn.Module, int]:
        layer = max(self.hparams.layers)
        return decoder_blocks(model, layout)[layer], layer

    def layer_update(self, model, site, keys: torch.Tensor, resid: torch.Tensor, moments: dict) -> torch.Tensor:
        moment = moments[site.name].moment() if site.name in moments else None
        return least_squares_update(keys, resid, moment, self.hparams.mom2_update_weight)

    def after_update(self, model, tokenizer, sites, requests, groups) -> None:
        """Hook for AlphaEdit's memory of edited keys."""

    def needs_moments(self) -> bool:
        return self.hparams.mom2_adjustment

    def new_handle(self, model, names: list[str]) -> EditHandle:
        return EditHandle(model, names)

    def corpus_note(self, moments: dict):
        return {k: m.provenance() for k, m in moments.items()} if moments else "identity (mom2_adjustment: false)"

    def apply(self, model, tokenizer, requests: list[EditRequest]) -> EditHandle:
        hp = self.hparams
        t_start = time.perf_counter()
        layout = resolve_layout(model, hp.module_template)
        sites = [edit_site(model, layer, hp.module_template) for layer in sorted(hp.layers)]
        handle = self.new_handle(model, [s.weight_name for s in sites])
        try:
            diagnostics = self.write(model, tokenizer, requests, sites, layout)
        except BaseException:
            handle.restore()  # a failed edit leaves no half-written weights behind
            raise
        diagnostics["seconds"]["total"] = time.perf_counter() - t_start
        handle.diagnostics.update(diagnostics)
        return handle

    def write(self, model, tokenizer, requests: list[EditRequest], sites: list, layout: Layout) -> dict:
        """MEMIT Alg. 1 for ``requests`` over ``sites`` (lowest layer first); returns the diagnostics."""
        hp = self.hparams
        t_start = time.perf_counter()
        groups = self.template_groups(model, tokenizer)
        templates = [t for g in groups for t in g]
        t_ctx = time.perf_counter()
        moments = self.second_moments(model, tokenizer, sites) if self.needs_moments() else {}
        t_cov = time.perf_counter()
        z_layer = sites[-1].layer
        targets = self.targets(model, tokenizer, requests, templates, layout)   # compute_z for each, batched
        z_star = torch.stack([t.value for t in targets])                                   # [n, d]
        t_z = time.perf_counter()
        per_layer = []
        for i, site in enumerate(sites):
            keys = compute_ks(model, tokenizer, site, requests, groups)                     # [n, d_in]
            z_now = block_outputs(model, tokenizer, layout, z_layer, requests)              # [n, d]
            resid = spread_residual(z_star, z_now, len(sites) - i)                          # [n, d]
            delta = self.layer_update(model, site, keys, resid, moments)                    # [d_out, d_in]
            site.add_(delta)
            per_layer.append({"layer": site.layer, "residual_norm": resid.norm(dim=1).tolist(),
                              "z_error_norm": (z_star - z_now).norm(dim=1).tolist(),
                              "update_norm": float(delta.norm())})
        self.after_update(model, tokenizer, sites, requests, groups)
        z_final = block_outputs(model, tokenizer, layout, z_layer, requests)
        return dict(
            method=type(self).__name__.removesuffix("Editor"), layers=[s.layer for s in sites],
            modules=[s.name for s in sites], corpus=self.corpus_note(moments), context_templates=len(templates),
            skip_lower_layers=all(t.skipped_lower_layers for t in targets),
            right_vector_norm=per_layer[0]["z_error_norm"],              # ||z* - z|| per request before the edit
            residual_norm=(z_star - z_final).norm(dim=1).tolist(),       # ||z* - z|| per request after it
            z_delta_norm=[t.delta_norm for t in targets], z_init_norm=[float(t.init.norm()) for t in targets],
            nll_first=[t.nll[0] for t in targets],
            nll_last=[t.nll[-1] for t in targets], z_steps=[t.steps for t in targets], z_batch=[t.batch for t in targets], per_layer=per_layer,
            seconds={"templates": t_ctx - t_start, "covariance": t_cov - t_ctx, "z": t_z - t_cov,
                     "updates": time.perf_counter() - t_z})
