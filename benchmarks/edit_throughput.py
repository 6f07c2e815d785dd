"""Seconds per ROME record, the previous path against the current one (prints figures; not a test).

Scores the same ZsRE records of a task (default ``zsre-fast``, 16 records) with ROME twice per record, alternating
so that load on the machine hits both alike: once with transformers' ``generate`` and the seeded sampler (the
path before the decode engine), once with the decode engine (one prefill per prompt shared by its K samples, rows
leaving when they end, the nucleus from a partial sort). Covariance statistics and context templates are made warm
first. Each record is pre-edit pass, edit, post-edit pass, restore; the script checks both paths drew the same
samples, prints per-record seconds (pre, edit, post) for each, the sampling pass alone, and as its last line
``speedup=<float>`` (previous seconds per record over current).

    .venv/bin/python benchmarks/edit_throughput.py [--task zsre-fast] [--records 16] [--threads 2]

Needs the perturbation set the task names (``make demo`` builds ``build/perturbations``).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="zsre-fast")
    ap.add_argument("--records", type=int, default=16)
    ap.add_argument("--editor", default="rome")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from editprobe.benchmark.config import load_records
    from editprobe.benchmark.editors import build_editor, choose_hparams
    from editprobe.benchmark.measure import measure, paraphrases, task_estimators
    from editprobe.benchmark.modes import request_for
    from editprobe.benchmark.sampling import sample_responses
    from editprobe.benchmark.tasks import load_task
    from editprobe.embeddings import Embedder
    from editprobe.models import DEFAULT_MODEL, load_model
    from editprobe.paths import default_cache_dir

    task = load_task(args.task)
    estimators = task_estimators(task)
    choice = choose_hparams(args.editor, DEFAULT_MODEL)
    editor = build_editor(args.editor, choice.hparams_file, choice.preset, cache_dir=default_cache_dir())
    records, _ = load_records(task)
    records = records[:args.records]
    model, tokenizer, info = load_model(device=args.device)
    embedder = Embedder(task.uncertainty.embedding_model, device=info.device)
    print(f"{args.editor} ({choice.preset}) on {info.id} ({info.device}, {torch.get_num_threads()} threads), task "
          f"{task.name} ({task.uncertainty.max_new_tokens} new tokens), {len(records)} records")
    editor.apply(model, tokenizer, [request_for(records[0])]).restore()       # covariance and templates warm
    for engine in ("generate", "decode"):     # first calls (embedder, kernels) out of the timed records
        measure(model, tokenizer, records[0], task, embedder, estimators=estimators, engine=engine)

    def one(record, engine):
        t0 = time.perf_counter()
        pre = measure(model, tokenizer, record, task, embedder, estimators=estimators, engine=engine)
        t1 = time.perf_counter()
        request = request_for(record)
        handle = editor.apply(model, tokenizer, [request])
        t2 = time.perf_counter()
        post = measure(model, tokenizer, record, task, embedder, editor, request, estimators, engine=engine)
        handle.restore()
        t3 = time.perf_counter()
        questions, levels = paraphrases(record, task)
        s0 = time.perf_counter()
        sample_responses(model, tokenizer, questions, record["id"], levels, task.uncertainty, task.seed, engine=engine)
        s1 = time.perf_counter()
        return (pre, post), {"pre": t1 - t0, "edit": t2 - t1, "post": t3 - t2, "pass": s1 - s0}

    seconds = {"generate": [], "decode": []}
    same = 0
    for i, record in enumerate(records):
        order = ("generate", "decode") if i % 2 == 0 else ("decode", "generate")
        got = {}
        for engine in order:
            got[engine], t = one(record, engine)
            seconds[engine].append(t)
        same += all(got["generate"][s]["responses"] == got["decode"][s]["responses"] for s in (0, 1))
        print(f"record {i + 1:>2} {record['id']}: " + "  ".join(
            f"{e} pre {seconds[e][-1]['pre']:5.1f} edit {seconds[e][-1]['edit']:5.1f} post {seconds[e][-1]['post']:5.1f}"
            for e in ("generate", "decode")), flush=True)
    print(f"records whose pre- and post-edit samples are identical on both paths: {same} of {len(records)}")
    total = {}
    for engine, label in (("generate", "previous (generate)"), ("decode", "current (decode engine)")):
        mean = {k: float(np.mean([t[k] for t in seconds[engine]])) for k in ("pre", "edit", "post", "pass")}
        total[engine] = mean["pre"] + mean["edit"] + mean["post"]
        print(f"{label:<24} s/record {total[engine]:6.1f}  (pre {mean['pre']:5.1f}, edit {mean['edit']:5.1f}, "
              f"post {mean['post']:5.1f}); one sampling pass {mean['pass']:5.1f} s")
    passes = np.mean([t["pass"] for t in seconds["generate"]]) / np.mean([t["pass"] for t in seconds["decode"]])
    print(f"sampling pass speedup {passes:.2f}")
    print(f"speedup={total['generate'] / total['decode']:.2f}")


if __name__ == "__main__":
    main()
