"""AlphaEdit: MEMIT with the update projected onto the null space of preserved knowledge (Fang et al. 2024,
"AlphaEdit: Null-Space Constrained Knowledge Editing for Language Models").

Targets ``z*``, keys ``K`` and the residual spread over layers are MEMIT's (:mod:`editprobe.benchmark.editors.memit`). Two
things change per layer:

* ``P`` — the projector onto the eigenvectors of the preserved keys' second moment ``C = E[k k^T]`` whose
  eigenvalues are below ``nullspace_threshold`` (Sec. 3.2, Eq. 7-9; :func:`null_space_projector`). For any
  preserved key ``k0``, ``P k0 ~ 0``, so an update ``Delta = X P`` leaves its output unchanged;
* ``Delta = R K^T P (K K^T P + K_p K_p^T P + L2 I)^-1``, computed in the seed's Appendix E.3 form
  ``Delta^T = solve(P (K K^T + K_p K_p^T) + L2 I, P K R^T)`` (Eq. 14; :func:`null_space_update`). ``K_p K_p^T``
  is the sum over keys written by this editor's earlier edits (sequential editing); it lives on the editor
  instance, and restoring a handle also rolls it back to what it was before that edit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from editprobe.benchmark.editors.base import EditHandle
from editprobe.benchmark.editors.context import model_cache_name
from editprobe.benchmark.editors.memit import MEMITEditor
from editprobe.benchmark.editors.rome import LocateEditHparams, compute_ks


@dataclass(frozen=True)
class AlphaEditHparams(LocateEditHparams):
    RANGES: ClassVar[dict] = {"nullspace_threshold": (0, None, True), "L2": (0, None, False)}

    layers: tuple[int, ...] = (4, 5, 6, 7, 8)
    v_num_grad_steps: int = 25
    v_lr: float = 0.1
    clamp_norm_factor: float = 0.75
    nullspace_threshold: float = 2e-2         # eigenvalues of C below this span the preserved keys' null space
    L2: float = 10.0                          # ridge term of Eq. 14 (the published configs call it L2)


def null_space_projector(second_moment: torch.Tensor, threshold: float,
                         device: torch.device | str | None = None) -> tuple[torch.Tensor, int]:
    """AlphaEdit Eq. 7-9: ``P = U_0 U_0^T`` over the eigenvectors of ``C`` with eigenvalue ``< threshold``.

    ``C`` is symmetric positive semi-definite, so its SVD is its eigendecomposition. Returns ``(P [d_in, d_in]``
    float64 on ``device`` (default: ``C``'s), the null-space dimension).
    """
    c = second_moment.to(device=device or second_moment.device, dtype=torch.float64)
    eigvals, eigvecs = torch.linalg.eigh(c)                                    # ascending, [d_in], [d_in, d_in]
    u0 = eigvecs[:, eigvals < threshold]                                       # [d_in, r]
    return u0 @ u0.T, int(u0.shape[1])


def null_space_update(keys: torch.Tensor, resid: torch.Tensor, projector: torch.Tensor,
                      edited_kkt: torch.Tensor, l2: float) -> torch.Tensor:
    """AlphaEdit Eq. 14 (seed Appendix E.3): ``Delta^T = solve(P (K K^T + K_p K_p^T) + L2 I, P K R^T)``.

    ``keys`` ``[n, d_in]``, ``resid`` ``[n, d_out]``, ``projector`` ``P``, ``edited_kkt`` ``K_p K_p^T``
    (``[d_in, d_in]``). The solution satisfies ``Delta = Delta P``, so ``Delta k0 = 0`` for every ``k0`` with
    ``P k0 = 0``. Returns ``Delta`` ``[d_out, d_in]`` in float64 on the keys' device (the model's); ``P``,
    ``K_p K_p^T`` and ``R`` are moved there first.
    """
    at = dict(device=keys.device, dtype=torch.float64)
    k = keys.to(**at).T                                                        # [d_in, n]
    p = projector.to(**at)
    a = p @ (k @ k.T + edited_kkt.to(**at)) + l2 * torch.eye(k.shape[0], **at)
    return torch.linalg.solve(a, p @ k @ resid.to(**at)).T                     # [d_out, d_in]


class _KeyMemoryHandle(EditHandle):
    """Restores the weights and the editor's memory of edited keys as they were before the edit."""

    def __init__(self, model, names, editor: AlphaEditEditor):
        super().__init__(model, names)
        self._editor = editor
        self._memory = {k: v.clone() for k, v in editor.edited_kkt.items()}

    def restore(self) -> None:
        super().restore()
        self._editor.edited_kkt = {k: v.clone() for k, v in self._memory.items()}


class AlphaEditEditor(MEMITEditor):
    name = "alphaedit"
    modes = ("single", "sequential", "batch")
    Hparams = AlphaEditHparams

    def __init__(self, hparams=None, **overrides):
        super().__init__(hparams, **overrides)
        self.edited_kkt: dict[tuple[str, str], torch.Tensor] = {}     # (model, module) -> K_p K_p^T [d_in, d_in]
        self._projectors: dict[tuple[str, str], tuple[torch.Tensor, int]] = {}

    def needs_moments(self) -> bool:
        return True

    def new_handle(self, model, names: list[str]) -> EditHandle:
        return _KeyMemoryHandle(model, names, self)

    def corpus_note(self, moments: dict):
        note = {k: m.provenance() for k, m in moments.items()}
        for (_, name), (_, rank) in self._projectors.items():
            if name in note:
                note[name]["null_space_dim"] = rank
        return note

    def projector(self, model, site, moments: dict) -> torch.Tensor:
        key = (model_cache_name(model), site.name)
        if key not in self._projectors:   # computed once, on the edited matrix's device
            self._projectors[key] = null_space_projector(moments[site.name].moment(), self.hparams.nullspace_threshold,
                                                         device=site.weight.device)
        return self._projectors[key][0]

    def layer_update(self, model, site, keys: torch.Tensor, resid: torch.Tensor, moments: dict) -> torch.Tensor:
        zero = torch.zeros(site.d_in, site.d_in, dtype=torch.float64, device=site.weight.device)
        kkt = self.edited_kkt.get((model_cache_name(model), site.name), zero)
        return null_space_update(keys, resid, self.projector(model, site, moments), kkt, self.hparams.L2)

    def after_update(self, model, tokenizer, sites, requests, groups) -> None:
        """Remember the keys just written (read again after all layers changed, as the reference code does)."""
        for site in sites:
            keys = compute_ks(model, tokenizer, site, requests, groups).double()                 # [n, d_in]
            key = (model_cache_name(model), site.name)
            prior = self.edited_kkt.get(key, torch.zeros(site.d_in, site.d_in, dtype=torch.float64,
                                                         device=keys.device))
            self.edited_kkt[key] = prior + keys.T @ keys
