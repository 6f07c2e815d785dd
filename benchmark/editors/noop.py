"""The control: an editor that changes nothing. ΔU under ``noop`` must be exactly 0."""

from __future__ import annotations

from benchmark.editors.base import EditHandle, Editor, NoHparams


class NoopEditor(Editor):
    name = "noop"
    modes = ("single", "sequential", "batch")
    Hparams = NoHparams

    def apply(self, model, tokenizer, requests) -> EditHandle:
        return EditHandle(model, [], diagnostics={"requests": len(requests)})
