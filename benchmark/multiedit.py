"""Many independent single edits measured in one batch: rows of edit b see W + ΔW_b.

A weight editor's edit of one record is captured as the change it makes to the matrices it touches (ΔW_b =
W_edited − W, then the weights are restored), and the post-edit passes of B records run together: a forward hook
on each touched module adds ``x_b ΔW_bᵀ`` to the output rows that belong to record b (the per-row low-rank term
multi-adapter serving uses; ROME's ΔW is rank one, MEMIT's and AlphaEdit's rank ≤ the batch). Every record keeps
its own seeded random numbers and its own prompts, so its samples and statistics are those of the one-at-a-time
path up to float rounding (``x(W + Δ)ᵀ`` and ``xWᵀ + xΔᵀ`` round differently): tested on 8 records.

Rows are told apart by :class:`editprobe.benchmark.sampling.ActiveRows` (row r of a record-major batch belongs to
record ``r // rows_per_record``); teacher-forced probes of one record set ``fixed``.
"""

from __future__ import annotations

import contextlib

import torch

from editprobe.benchmark.sampling import ActiveRows


class RowDeltas:
    """Forward hooks adding each record's weight change to that record's rows only."""

    def __init__(self, model, deltas: list[dict[str, torch.Tensor]], rows_per_record: int, active: ActiveRows):
        self.deltas, self.rows_per_record, self.active = deltas, rows_per_record, active
        self.fixed: int | None = None        # all rows belong to this record (teacher-forced probes)
        modules = dict(model.named_modules())
        names = sorted({n for d in deltas for n in d})
        self._handles = []
        for name in names:
            module_name, _, leaf = name.rpartition(".")
            module = modules[module_name]
            if leaf != "weight":
                raise ValueError(f"{name}: only weight matrices can be applied per row")
            transposed = type(module).__name__ == "Conv1D"         # y = x W (GPT-2) instead of y = x Wᵀ
            if not transposed and not isinstance(module, torch.nn.Linear):
                raise ValueError(f"{name}: per-row deltas need torch.nn.Linear or Conv1D, got {type(module).__name__}")
            self._handles.append(module.register_forward_hook(self._hook(name, transposed)))

    def _hook(self, name: str, transposed: bool):
        def hook(module, args, output):
            x = args[0]
            if self.fixed is not None:
                delta = self.deltas[self.fixed].get(name)
                return output if delta is None else output + _apply(x, delta, transposed)
            record = torch.div(self.active.rows, self.rows_per_record, rounding_mode="floor")  # (rows,)
            out = output.clone()
            for b in record.unique().tolist():
                delta = self.deltas[b].get(name)
                if delta is not None:
                    idx = (record == b).nonzero().squeeze(1)
                    out[idx] = output[idx] + _apply(x[idx], delta, transposed)
            return out
        return hook

    @contextlib.contextmanager
    def only(self, record: int):
        self.fixed = record
        try:
            yield
        finally:
            self.fixed = None

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def _apply(x: torch.Tensor, delta: torch.Tensor, transposed: bool) -> torch.Tensor:
    return x @ delta if transposed else x @ delta.T


@torch.no_grad()
def capture_delta(model, handle) -> dict[str, torch.Tensor]:
    """The change an applied edit made to each parameter it touched (call before ``handle.restore()``)."""
    params = dict(model.named_parameters())
    return {name: params[name].detach() - handle.original(name) for name in handle.touched}
