"""GPU check: the benchmark's editing and sampling path on a 7B-shaped model, on a node with nothing but the code.

Built for the hardest case: an air-gapped GPU node with no network, no model weights and only a small copy of the
working tree. Everything is made in-process: a randomly initialised LLaMA with Llama-2-7B's configuration (bf16),
a byte-level BPE tokenizer trained on the script's own text, a randomly initialised bag-of-tokens sentence encoder,
four hand-written toy records in the perturbation-record layout (not released data: they exist only to drive the
code) and a small synthetic corpus for the covariance statistics. The task settings (M = 6 paraphrases, K = 5
samples, 100 new tokens, nucleus sampling) are read from the shipped ``tasks/zsre.yaml``.

For each of noop, ROME (with its covariance adjustment on), MEMIT and AlphaEdit it scores the records through the
runner's own ``score_record`` (pre-edit pass, edit, post-edit pass, restore checked bit for bit) with the shipped
``llama2-7b`` presets, their covariance corpus replaced by the synthetic one. It prints failed records (must be
0), seconds per edit, sampling tokens/s, peak GPU memory, and the decode step time against the weight-bandwidth
floor (bytes of weights / HBM bandwidth). Then the multi-edit path: B records (16; 4 with --tiny) each with its own
synthetic rank-one change of ROME's edited matrix, their post-edit measurement one at a time (weights changed,
measured, restored) against all B in one batch with per-row deltas: edits/hour of each and whether both drew the
same samples; and ROME's target vectors of the same B edits, optimised one at a time against one batched
optimisation (seconds per target, steps and the largest relative gap between the two). Exit status 1 when any
record failed.

    python benchmarks/gpu_check.py                 # on a GPU node, about 5 minutes
    python benchmarks/gpu_check.py --tiny          # 2-layer model on the CPU, under a minute (run by the tests)

Imports (checked at the end of every run): the standard library, torch, transformers, tokenizers, numpy, yaml
(PyYAML, a transformers dependency) and tqdm (likewise), and the repository's own ``editprobe`` code, which must be
importable (an editable install, or ``PYTHONPATH`` set to the folder above a copy of the tree laid out as the
package: see the README's GPU section). It never imports datasets, sentence-transformers or jsonschema.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

#: HBM bandwidth in GB/s by device-name fragment (vendor data sheets); --hbm-gbps overrides.
HBM_GBPS = {"H200": 4800.0, "H100": 3350.0, "A100": 2039.0, "L40S": 864.0, "A10": 600.0}
FORBIDDEN = ("datasets", "sentence_transformers", "jsonschema")

# Toy facts in the perturbation-record layout. Wording is the script's own; the facts are placeholders.
TOY = [
    ("Which river flows through Lumen City?", "Lumen City", "the Vey", "the Arno"),
    ("Who founded the Orrin Institute?", "Orrin Institute", "Mara Quill", "Tomas Reed"),
    ("What language is spoken in Calder Bay?", "Calder Bay", "Velsh", "Dutch"),
    ("Which team does Piet Ansel play for?", "Piet Ansel", "the Harbor Owls", "the Red Foxes"),
]
STYLES = ["{q}", "Tell me: {q}", "I wonder, {q}", "Quick question. {q}", "Could you say {q}", "Do you know {q}"]


def toy_records() -> list[dict]:
    records = []
    for i, (question, subject, answer, alt) in enumerate(TOY):
        q = question[0].lower() + question[1:]
        records.append({
            "id": f"gpu-check-{i}", "prompt": question, "question": question, "subject": subject,
            "answer": answer, "answer_aliases": [answer], "alt": alt, "topic": None,
            "generated_questions": [{"level": lvl + 1, "rephrase": s.format(q=q if lvl else question)}
                                    for lvl, s in enumerate(STYLES)],
            "rephrase": f"Please answer: {q}",
            "locality": [{"prompt": "What is the capital of France?", "answers": ["Paris"], "kind": "neighborhood"}],
            "portability": [],
        })
    return records


def corpus_texts(n: int) -> list[str]:
    words = " ".join(t for row in TOY for t in row).split() + "the a of in and to is was on for with".split()
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(words, size=24)) + "." for _ in range(n)]


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE(unk_token=None))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<pad>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    text = [r["prompt"] for r in toy_records()] + corpus_texts(64) + STYLES
    raw.train_from_iterator(text, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>", eos_token="</s>")
    tok.padding_side = "left"
    return tok


class RandomEncoder:
    """A randomly initialised sentence encoder: mean of token embeddings, L2-normalised (stands in for MiniLM)."""

    def __init__(self, tokenizer, dim: int = 64, device: str = "cpu"):
        self.tokenizer = tokenizer
        g = torch.Generator().manual_seed(0)
        self.table = torch.randn(len(tokenizer), dim, generator=g).to(device)

    def encode(self, texts: list[str]) -> np.ndarray:
        rows = []
        for t in texts:
            ids = self.tokenizer(t or " ", add_special_tokens=False)["input_ids"] or [0]
            v = self.table[torch.tensor(ids, device=self.table.device)].mean(0)
            rows.append((v / v.norm()).float().cpu().numpy())
        return np.stack(rows)


def build_model(tiny: bool, device: str, tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    if tiny:
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512)
        dtype = torch.float32
    else:  # Llama-2-7B's shape
        config = LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                             num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
                             rms_norm_eps=1e-5)
        dtype = torch.bfloat16
    config.pad_token_id, config.eos_token_id, config.bos_token_id = (tokenizer.pad_token_id, tokenizer.eos_token_id,
                                                                      None)
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)          # initialise directly in the final dtype, on the device
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval(), "float32" if tiny else "bfloat16"


def editors(tiny: bool, corpus: Path, cache: Path):
    from editprobe.benchmark.editors import build_editor

    override = dict(mom2_dataset=str(corpus), mom2_n_samples=16 if tiny else 64, mom2_sample_tokens=16 if tiny else 64)
    if tiny:
        override.update(v_num_grad_steps=5, context_template_length_params=((5, 2),))
    out = [build_editor("noop")]
    for name, layers in (("rome", (1,)), ("memit", (0, 1)), ("alphaedit", (0, 1))):
        editor = build_editor(name, preset="llama2-7b", cache_dir=cache)
        changes = dict(override, layers=layers) if tiny else dict(override)
        if name == "rome":
            changes["mom2_adjustment"] = True       # exercise the covariance path the preset leaves off
        if name == "alphaedit" and tiny:
            changes["nullspace_threshold"] = 1.0
        editor.hparams = dataclasses.replace(editor.hparams, **changes)
        out.append(editor)
    return out


def decode_step_seconds(model, tokenizer, rows: int, new_tokens: int, device: str) -> tuple[float, float, int]:
    """(seconds per decode step, generated tokens/s, steps) of one batch of ``rows`` prompts."""
    from editprobe.benchmark.sampling import SeededNucleusSampler, pinned_config, seeded_generate

    enc = tokenizer(["Which river flows through Lumen City?"] * rows, return_tensors="pt", padding=True).to(device)
    width = enc["input_ids"].shape[1]

    def timed(n: int) -> tuple[float, int]:
        sampler = SeededNucleusSampler(torch.rand(rows, n, dtype=torch.float64), width, 1.0, 0.9, 0)
        config = pinned_config(model, tokenizer, n)
        config.eos_token_id = None                      # run every step: the random model may emit EOS anywhere
        sync(device)
        t0 = time.perf_counter()
        out = seeded_generate(model, enc["input_ids"], enc["attention_mask"], sampler, config)
        sync(device)
        return time.perf_counter() - t0, out.shape[1] - width

    timed(2)                                            # warm-up (kernels, allocator)
    t1, _ = timed(1)
    tn, steps = timed(new_tokens)
    per_step = (tn - t1) / max(1, steps - 1)
    return per_step, rows * steps / tn, steps


def multi_edit(model, tokenizer, task, encoder, n: int, device: str) -> None:
    """Post-edit measurement of n single edits: one at a time against one batch with per-row deltas."""
    from editprobe.benchmark.editors.layers import edit_site
    from editprobe.benchmark.measure import measure, measure_many, task_estimators
    from editprobe.benchmark.multiedit import RowDeltas
    from editprobe.benchmark.sampling import ActiveRows

    base = toy_records()
    records = [{**base[i % len(base)], "id": f"gpu-check-multi-{i}"} for i in range(n)]
    site = edit_site(model, 1 if len(model.model.layers) < 8 else 5)
    w = site.weight
    gen = torch.Generator().manual_seed(0)
    scale = float(w.detach().float().norm()) * 0.05
    deltas = []
    for _ in records:        # a rank-one change of realistic size: 5% of the matrix's norm
        u, v = torch.randn(w.shape[0], 1, generator=gen), torch.randn(1, w.shape[1], generator=gen)
        deltas.append({site.weight_name: (scale * (u @ v) / (u.norm() * v.norm())).to(w.device, w.dtype)})
    estimators = task_estimators(task)
    sync(device)
    t0 = time.perf_counter()
    one = []
    for record, delta in zip(records, deltas):
        original = w.detach().clone()
        with torch.no_grad():
            w.add_(delta[site.weight_name])
        one.append(measure(model, tokenizer, record, task, encoder, estimators=estimators))
        with torch.no_grad():
            w.copy_(original)
    sync(device)
    t1 = time.perf_counter()
    m, k = len(task.uncertainty.levels), task.uncertainty.samples_per_paraphrase
    hooks = RowDeltas(model, deltas, m * k, ActiveRows(0, device))
    try:
        many = measure_many(model, tokenizer, records, task, encoder, estimators=estimators, deltas=hooks)
    finally:
        hooks.remove()
    sync(device)
    t2 = time.perf_counter()
    same = sum(a["responses"] == b["responses"] for a, b in zip(one, many))
    print(f"multi-edit: B={n}, post-edit measurement one at a time {n / (t1 - t0) * 3600:.0f} edits/h, batched "
          f"{n / (t2 - t1) * 3600:.0f} edits/h: {(t1 - t0) / (t2 - t1):.2f}x; same samples for {same} of {n} records")


def target_batch(model, tokenizer, editor, n: int, device: str) -> None:
    """ROME's v* for n edits: one optimisation each against one batched optimisation (``optimise_targets``)."""
    from editprobe.benchmark.editors import EditRequest
    from editprobe.benchmark.editors.layers import resolve_layout
    from editprobe.benchmark.editors.rome import optimise_targets

    base = toy_records()
    requests = [EditRequest(f"gpu-check-target-{i}", r["prompt"], r["subject"], r["alt"])
                for i, r in enumerate(base[i % len(base)] for i in range(n))]
    layout = resolve_layout(model, editor.hparams.module_template)
    templates = [t for g in editor.template_groups(model, tokenizer) for t in g]
    module, layer = editor.target_insertion(model, layout)
    sync(device)
    t0 = time.perf_counter()
    alone = [optimise_targets(model, tokenizer, [r], templates, module, layer, layout, editor.hparams)[0]
             for r in requests]
    sync(device)
    t1 = time.perf_counter()
    together = optimise_targets(model, tokenizer, requests, templates, module, layer, layout, editor.hparams)
    sync(device)
    t2 = time.perf_counter()
    steps = sum(a.steps == b.steps for a, b in zip(alone, together))
    gap = max(float((b.value - a.value).norm() / a.value.norm()) for a, b in zip(alone, together))
    print(f"targets: B={n} ROME v*, one at a time {(t1 - t0) / n:.2f} s/target, batched {(t2 - t1) / n:.2f} s/target: "
          f"{(t1 - t0) / (t2 - t1):.2f}x; same steps for {steps} of {n}, largest relative gap {gap:.1e}")


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="2-layer model on the CPU (under a minute)")
    ap.add_argument("--device", default=None, help="default: cuda, or cpu with --tiny")
    ap.add_argument("--records", type=int, default=None, help="default: 4 (2 with --tiny)")
    ap.add_argument("--hbm-gbps", type=float, default=None, help="HBM bandwidth; default from the device name")
    args = ap.parse_args()
    device = args.device or ("cpu" if args.tiny else "cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: run with --tiny on the CPU", file=sys.stderr)
        return 2

    import yaml

    from editprobe.benchmark.runner import PreEditCache, score_record
    from editprobe.benchmark.tasks import task_from_spec
    from editprobe.resources import tasks_dir

    spec = yaml.safe_load((tasks_dir() / "zsre.yaml").read_text(encoding="utf-8"))
    if args.tiny:
        spec["uncertainty"]["max_new_tokens"] = 8
    task = task_from_spec(spec, "tasks/zsre.yaml")
    records = toy_records()[: args.records or (2 if args.tiny else 4)]
    t0 = time.perf_counter()
    tokenizer = build_tokenizer()
    model, dtype = build_model(args.tiny, device, tokenizer)
    encoder = RandomEncoder(tokenizer, device=device)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    print(f"model: {'2-layer tiny LLaMA' if args.tiny else 'Llama-2-7B-shaped LLaMA'} ({dtype}, random weights, "
          f"{weight_bytes / 2**30:.2f} GiB) on {device}, built in {time.perf_counter() - t0:.1f} s")
    print(f"task: zsre, M={len(task.uncertainty.levels)} K={task.uncertainty.samples_per_paraphrase} "
          f"max_new_tokens={task.uncertainty.max_new_tokens}; {len(records)} toy records")

    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "synthetic_corpus.txt"
        corpus.write_text("\n".join(corpus_texts(200)), encoding="utf-8")
        pre_cache = PreEditCache(Path(tmp) / "cache", {"gpu_check": True, "tiny": args.tiny})
        editors_used = editors(args.tiny, corpus, Path(tmp) / "cache")
        for editor in editors_used:
            t_editor = time.perf_counter()
            lines = [score_record(model, tokenizer, r, i, task, editor, encoder, pre_cache)
                     for i, r in enumerate(records)]
            bad = [x for x in lines if x["status"] != "ok"]
            failed += len(bad)
            ok = [x for x in lines if x["status"] == "ok"]
            edit = np.mean([x["seconds"]["edit"] for x in ok]) if ok else float("nan")
            post = np.mean([x["seconds"]["post"] for x in ok]) if ok else float("nan")
            print(f"{editor.name:<10} failed {len(bad)}/{len(lines)}  edit {edit:7.2f} s/record  "
                  f"post pass {post:6.2f} s  ({time.perf_counter() - t_editor:.0f} s in all)")
            for x in bad:
                print(f"  {x['id']}: {x['error']}")

        multi_edit(model, tokenizer, task, encoder, 4 if args.tiny else 16, device)
        rome = next(e for e in editors_used if e.name == "rome")
        target_batch(model, tokenizer, rome, 4 if args.tiny else 16, device)

    rows = len(task.uncertainty.levels) * task.uncertainty.samples_per_paraphrase
    step, tokens_per_s, steps = decode_step_seconds(model, tokenizer, rows, 8 if args.tiny else 32, device)
    print(f"sampling: {tokens_per_s:.0f} tokens/s at {rows} rows ({steps} steps)")
    line = f"decode step: {step * 1000:.2f} ms"
    if device.startswith("cuda"):
        name = torch.cuda.get_device_name()
        gbps = args.hbm_gbps or next((v for k, v in HBM_GBPS.items() if k in name), None)
        if gbps:
            floor = weight_bytes / (gbps * 1e9)
            line += f" vs weight-bandwidth floor {floor * 1000:.2f} ms ({name}, {gbps:.0f} GB/s): {step / floor:.2f}x"
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    else:
        print("peak GPU memory: n/a (CPU)")
    print(line)
    leaked = [m for m in FORBIDDEN if m in sys.modules]
    print(f"imports beyond torch/transformers/numpy: {', '.join(leaked) or 'none of ' + ', '.join(FORBIDDEN)}")
    print(f"failed records: {failed}")
    return 1 if failed or leaked else 0


if __name__ == "__main__":
    sys.exit(main())
