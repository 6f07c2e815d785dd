"""Per-edit time of ROME / MEMIT / AlphaEdit with and without the layer-skipping target optimisation (prints numbers).

While v* (ROME) or z* (MEMIT, AlphaEdit) is optimised, nothing below the edited layer changes, so the editors run
the lower layers once and then only the edited block and those above it per step (``skip_lower_layers: true``,
the default). This script edits the same real ZsRE records both ways, alternating per record so that load on the
machine hits both alike, and prints the mean seconds per edit, the target-optimisation seconds, and how far the
two target vectors are apart (float rounding only).

    .venv/bin/python benchmarks/ls_edit_speed.py [--records 5] [--editors rome,memit,alphaedit] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch
from _zsre_setup import add_common_options, zsre_context


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_options(ap, records=5, editors="rome,memit,alphaedit")
    args = ap.parse_args()

    from editprobe.benchmark.diagnostics import editor_for

    model, tokenizer, info, ctx = zsre_context(args)
    records = ctx.records
    print(f"device {info.device}, {torch.get_num_threads()} threads, {len(records)} ZsRE records")
    print(f"{'editor':<10} {'skip':>5} {'s/edit':>7} {'s target':>9} {'steps':>6}  max |target diff|")
    for name in args.editors.split(","):
        editors = {skip: editor_for(ctx, name, skip_lower_layers=skip) for skip in (True, False)}
        editors[True].apply(model, tokenizer, ctx.requests()[:1]).restore()   # templates and stats warm
        times = {True: [], False: []}
        target = {True: [], False: []}
        steps = {True: [], False: []}
        diffs = []
        for request in ctx.requests():
            values = {}
            for skip in (True, False):
                t0 = time.perf_counter()
                handle = editors[skip].apply(model, tokenizer, [request])
                times[skip].append(time.perf_counter() - t0)
                d = handle.diagnostics
                if "edits" in d:    # ROME
                    target[skip].append(sum(e["seconds"]["v"] for e in d["edits"]))
                    steps[skip].append(sum(e["v_steps"] for e in d["edits"]))
                    values[skip] = torch.tensor([e["v_delta_norm"] for e in d["edits"]])
                else:
                    target[skip].append(d["seconds"]["z"])
                    steps[skip].append(sum(d["z_steps"]))
                    values[skip] = torch.tensor(d["z_delta_norm"])
                handle.restore()
            diffs.append(float((values[True] - values[False]).abs().max()))
        for skip in (True, False):
            n = len(times[skip])
            print(f"{name:<10} {str(skip):>5} {sum(times[skip]) / n:7.2f} {sum(target[skip]) / n:9.2f} "
                  f"{sum(steps[skip]) / n:6.1f}  {max(diffs):.2e} (|delta| norms)")
        print(f"{name:<10} speed-up of the target optimisation: "
              f"{sum(target[False]) / sum(target[True]):.2f}x, of the whole edit: {sum(times[False]) / sum(times[True]):.2f}x")


if __name__ == "__main__":
    main()
