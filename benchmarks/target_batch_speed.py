"""Seconds per target vector with the targets of B edits optimised in one batch, against one at a time.

ROME's v* and MEMIT's / AlphaEdit's z* are the costly part of an edit: an Adam loop over the context-prefixed
prompts. The problems of independent edits do not interact, so :func:`optimise_targets` runs B of them as one
batch (each request its own rows, loss, early stop and clamp). This script optimises the same real ZsRE records'
targets both ways with the model's shipped presets, the two ways taking turns within each round so that load on
the machine hits both alike, checks the batch against the one-at-a-time values (steps equal, largest relative
difference of the vectors) and prints seconds per target for each way; its last line is
``speedup=<float>`` (one at a time over batched, summed over the editors and rounds).

    .venv/bin/python benchmarks/target_batch_speed.py [--records 8] [--batch 8] [--editors rome,memit]
        [--rounds 1] [--threads 2] [--device auto]
"""

from __future__ import annotations

import argparse
import time

import torch
from _zsre_setup import add_common_options, zsre_context


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_options(ap, records=8, editors="rome,memit")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()

    from editprobe.benchmark.diagnostics import editor_for
    from editprobe.benchmark.editors.layers import resolve_layout
    from editprobe.benchmark.editors.rome import optimise_targets

    model, tokenizer, info, ctx = zsre_context(args)
    requests = ctx.requests()
    print(f"device {info.device}, {torch.get_num_threads()} threads, {len(requests)} ZsRE records, batch {args.batch}")
    print(f"{'editor':<10} {'round':>5} {'alone s/target':>15} {'batched s/target':>17} {'ratio':>6} "
          f"{'steps equal':>11}  max rel. diff")
    total = {"alone": 0.0, "batched": 0.0}
    for name in args.editors.split(","):
        editor = editor_for(ctx, name)
        layout = resolve_layout(model, editor.hparams.module_template)
        templates = [t for g in editor.template_groups(model, tokenizer) for t in g]   # sampled once, cached
        module, layer = editor.target_insertion(model, layout)

        def alone():
            return [v for r in requests for v in optimise_targets(model, tokenizer, [r], templates, module, layer,
                                                                  layout, editor.hparams)]

        def batched():
            return [v for s in range(0, len(requests), args.batch)
                    for v in optimise_targets(model, tokenizer, requests[s:s + args.batch], templates, module,
                                              layer, layout, editor.hparams)]

        for rnd in range(args.rounds):
            seconds, values = {}, {}
            order = (("alone", alone), ("batched", batched)) if rnd % 2 == 0 else (("batched", batched), ("alone", alone))
            for way, fn in order:
                t0 = time.perf_counter()
                values[way] = fn()
                seconds[way] = time.perf_counter() - t0
                total[way] += seconds[way]
            same_steps = all(a.steps == b.steps for a, b in zip(values["alone"], values["batched"]))
            diff = max(float((b.value - a.value).norm() / a.value.norm())
                       for a, b in zip(values["alone"], values["batched"]))
            n = len(requests)
            print(f"{name:<10} {rnd:>5} {seconds['alone'] / n:15.2f} {seconds['batched'] / n:17.2f} "
                  f"{seconds['alone'] / seconds['batched']:6.2f} {str(same_steps):>11}  {diff:.1e}", flush=True)
    print(f"speedup={total['alone'] / total['batched']:.2f}")


if __name__ == "__main__":
    main()
