"""Time of one layer's key covariance from the offline ``self`` corpus (what a first ROME edit on a new model pays).

ROME's SmolLM2 preset estimates C = E[k kᵀ] at its edit layer from 300 texts of 128 tokens the model samples
itself. This script computes it from scratch (no stats file is read or written) and prints the seconds spent sampling
the corpus and accumulating the keys. With ``--reference`` it first does the same the way the project did before
the decode engine (transformers' ``generate`` with the seeded sampler; a forward pass through every layer), in the
same process, counts the texts that differ (float rounding in near-ties), compares the moments, and prints the
ratio.

    .venv/bin/python benchmarks/covariance_speed.py [--reference] [--texts 300] [--threads 2]
"""

from __future__ import annotations

import argparse
import math
import time

import torch


def reference_texts(model, tokenizer, openers, per_opener, new_tokens, seed, top_p, batch_size=32):
    """The pre-decode-engine path: each batch of rows through ``generate`` with the seeded sampler."""
    from editprobe.benchmark.editors.context import _row_seed
    from editprobe.benchmark.sampling import SeededNucleusSampler, pinned_config, row_uniforms, seeded_generate

    texts = []
    for opener in openers:
        for start in range(0, per_opener, batch_size):
            rows = range(start, min(per_opener, start + batch_size))
            ids = torch.tensor([tokenizer(opener, add_special_tokens=False)["input_ids"]] * len(rows))
            sampler = SeededNucleusSampler(row_uniforms([_row_seed(seed, opener, r) for r in rows], new_tokens),
                                           ids.shape[1], 1.0, top_p, 0)
            out = seeded_generate(model, ids, torch.ones_like(ids), sampler, pinned_config(model, tokenizer, new_tokens))
            texts.extend(tokenizer.batch_decode(out, skip_special_tokens=True))
    return texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--texts", type=int, default=300)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--layer", type=int, default=5, help="the ROME SmolLM2 preset's layer")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reference", action="store_true", help="also time the generate / full-forward path")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from editprobe.benchmark.editors import covariance
    from editprobe.benchmark.editors.context import sample_texts
    from editprobe.benchmark.editors.layers import edit_site
    from editprobe.models import load_model

    model, tokenizer, info = load_model()
    site = edit_site(model, args.layer)
    per_opener = math.ceil(args.texts / len(covariance.SELF_OPENERS))
    print(f"{info.id} on {info.device}, {torch.get_num_threads()} threads: {args.texts} texts x {args.tokens} tokens, "
          f"keys of {site.name}")
    rows = []
    if args.reference:
        t0 = time.perf_counter()
        ref = reference_texts(model, tokenizer, covariance.SELF_OPENERS, per_opener, args.tokens, 0, 0.95)[:args.texts]
        t1 = time.perf_counter()
        full = _full_forward_moment(model, tokenizer, site, ref, args.tokens)
        t2 = time.perf_counter()
        rows.append(("generate + full forward", t1 - t0, t2 - t1))
    t0 = time.perf_counter()
    texts = sample_texts(model, tokenizer, covariance.SELF_OPENERS, per_opener, args.tokens, 0, top_p=0.95,
                         desc="self corpus")[:args.texts]
    t1 = time.perf_counter()
    acc = covariance.accumulate_second_moments(model, tokenizer, [site], texts, args.tokens, torch.float32)
    t2 = time.perf_counter()
    rows.append(("decode engine + early stop", t1 - t0, t2 - t1))
    for name, sample_s, keys_s in rows:
        print(f"{name:<28} sampling {sample_s:7.1f} s   keys {keys_s:6.1f} s   total {sample_s + keys_s:7.1f} s")
    if args.reference:
        differ = sum(a != b for a, b in zip(ref, texts))
        mom2, _ = acc[site.name]
        same = _full_forward_moment(model, tokenizer, site, texts, args.tokens)
        print(f"texts that differ: {differ} of {len(texts)} (a near-tie decided the other way by float rounding, "
              "after which the text goes its own way)")
        print(f"early-stopped keys vs a full forward on the same texts: max relative difference "
              f"{float((mom2 - same).abs().max() / same.abs().max()):.1e}; moment vs the reference texts' "
              f"{float((mom2 - full).abs().max() / full.abs().max()):.1e}")
        print(f"speedup={(rows[0][1] + rows[0][2]) / (rows[1][1] + rows[1][2]):.2f}")


def _full_forward_moment(model, tokenizer, site, texts, max_tokens):
    """sum k kᵀ of the site's inputs with a forward pass through every layer (the previous accumulation)."""
    total = torch.zeros(site.d_in, site.d_in)
    mask_now = []

    def hook(module, args):
        k = args[0].detach()[mask_now[0].bool()].float()
        total.addmm_(k.T, k)

    handle = site.module.register_forward_pre_hook(hook)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    try:
        with torch.no_grad():
            for start in range(0, len(texts), 8):
                rows = [r for r in (tokenizer(t)["input_ids"][:max_tokens] for t in texts[start:start + 8]) if r]
                width = max(map(len, rows))
                ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
                mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
                mask_now[:] = [mask]
                model(input_ids=ids, attention_mask=mask, use_cache=False)
    finally:
        handle.remove()
    return total


if __name__ == "__main__":
    main()
