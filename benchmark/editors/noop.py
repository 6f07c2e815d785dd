"""The two controls. ``noop`` changes nothing and resamples with the same random numbers, so its ΔU is exactly 0
(a check of the pairing, not a bound on anything). ``null`` changes nothing either, but its post-edit pass draws
a fresh seed stream: its ΔU and CI are what sampling noise alone produces, the floor under every other editor's."""

from __future__ import annotations

import hashlib

from editprobe.benchmark.editors.base import EditHandle, Editor, NoHparams


class NoopEditor(Editor):
    """The pairing control: no edit, the same random numbers after it; ΔU must be exactly 0."""
    row_batchable = True

    name = "noop"
    modes = ("single", "sequential", "batch")
    Hparams = NoHparams

    def apply(self, model, tokenizer, requests) -> EditHandle:
        return EditHandle(model, [], diagnostics={"requests": len(requests)})


class NullEditor(NoopEditor):
    """The noise-floor control: no edit, a post-edit pass sampled from another seed stream."""

    name = "null"

    def sampling_seed(self, task_seed: int) -> int:
        # Any fixed function of the task seed that differs from it gives every row fresh uniforms.
        return int.from_bytes(hashlib.sha256(f"null-control|{task_seed}".encode()).digest()[:8], "big") >> 1
