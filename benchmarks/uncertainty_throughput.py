"""Throughput figures for the uncertainty pass (prints numbers; not a test).

(a) one record's M x K responses from one batched ``generate`` call vs a loop of one ``generate``
    call per sample producing the same number of responses (target: batched >= 5x faster);
(b) wall time of a second editor run on the same records vs the first (target <= 55%: the second
    run reads the pre-edit pass from the cache).

    .venv/bin/python benchmarks/uncertainty_throughput.py [--records 10] [--device auto] [--dataset build/perturbations]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import torch


def batched_vs_loop(model, tokenizer, record: dict, settings, seed: int) -> tuple[float, float]:
    from editprobe.benchmark.sampling import sample_responses

    questions = [g["rephrase"] for g in record["generated_questions"]]
    levels = [g["level"] for g in record["generated_questions"]]
    t0 = time.perf_counter()
    sample_responses(model, tokenizer, questions, record["id"], levels, settings, seed)
    batched = time.perf_counter() - t0
    one = dataclasses.replace(settings, samples_per_paraphrase=1)
    t0 = time.perf_counter()
    for q, level in zip(questions, levels):
        for i in range(settings.samples_per_paraphrase):
            sample_responses(model, tokenizer, [q], f"{record['id']}#{i}", [level], one, seed)
    return batched, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=10)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dataset", default=None, help="perturbation set folder (default: the task's)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--task", default="zsre-fast", help="task name (zsre-fast: 32 new tokens; zsre: the paper's 100)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from editprobe.benchmark.runner import RunConfig, load_records, run
    from editprobe.benchmark.tasks import load_task
    from editprobe.models import load_model

    task = load_task(args.task, {"path": args.dataset} if args.dataset else None)
    records, _ = load_records(task)
    model, tokenizer, info = load_model(device=args.device)
    print(f"device {info.device}, torch threads {torch.get_num_threads()}, model {info.id}")
    batched, loop = batched_vs_loop(model, tokenizer, records[0], task.uncertainty, task.seed)
    n = len(task.uncertainty.levels) * task.uncertainty.samples_per_paraphrase
    print(f"(a) {n} responses, max_new_tokens {task.uncertainty.max_new_tokens}: batched {batched:.2f} s, "
          f"one-per-generate loop {loop:.2f} s -> {loop / batched:.1f}x")
    del model

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # Two editors: FT-M (the preset) then FT-L (same layer, first-token objective).
        ft_l = tmp / "ft_l.yaml"
        ft_l.write_text("layers: [8]\nobjective: prompt_last\nlr: 0.001\nnorm_constraint: null\n")
        times = {}
        for label, hparams in (("FT-M", None), ("FT-L", ft_l)):
            cfg = RunConfig(task=args.task, editor="ft", hparams=hparams, output_dir=tmp / label, limit=args.records,
                            device=args.device, dataset_path=args.dataset, cache_dir=tmp / "cache")
            t0 = time.perf_counter()
            run(cfg, progress=True)
            times[label] = time.perf_counter() - t0
        print(f"(b) {args.records} records: first editor (FT-M, pre-edit sampled) {times['FT-M']:.1f} s, "
              f"second editor (FT-L, pre-edit from cache) {times['FT-L']:.1f} s -> "
              f"{100 * times['FT-L'] / times['FT-M']:.0f}% of the first")


if __name__ == "__main__":
    main()
