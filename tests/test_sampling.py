"""Seeded nucleus sampling: the choice rule by hand, and independence from batch composition on SmolLM2."""

import math

import torch

from editprobe.benchmark.sampling import SeededNucleusSampler, row_seed, sample_responses
from editprobe.benchmark.tasks import load_task


def _pick(logits, u, top_p, top_k=0, temperature=1.0):
    sampler = SeededNucleusSampler(torch.tensor([[u]], dtype=torch.float64), prompt_length=3,
                                   temperature=temperature, top_p=top_p, top_k=top_k)
    out = sampler(torch.zeros(1, 3, dtype=torch.long), torch.tensor([logits]))
    return int(out.argmax()), out


def test_nucleus_choice_by_hand():
    # probabilities 0.5, 0.3, 0.15, 0.05 (logits = log p). top_p 0.9: nucleus = first three tokens
    # (mass before the third is 0.8 < 0.9; before the fourth 0.95 >= 0.9); renormalised over 0.95:
    # cdf = 0.526, 0.842, 1.0.
    logits = [math.log(p) for p in (0.5, 0.3, 0.15, 0.05)]
    assert _pick(logits, 0.50, 0.9)[0] == 0
    assert _pick(logits, 0.60, 0.9)[0] == 1
    assert _pick(logits, 0.90, 0.9)[0] == 2      # token 3 (p=0.05) is outside the nucleus
    assert _pick(logits, 0.999, 1.0)[0] == 3     # top_p 1: cdf 0.5, 0.8, 0.95, 1.0
    assert _pick(logits, 0.999, 1.0, top_k=2)[0] == 1  # top-k 2 keeps tokens 0 and 1 only
    _, out = _pick(logits, 0.6, 0.9)
    assert torch.isinf(out).sum() == 3 and out.max() == 0  # one-hot in log space


def test_row_seed_is_stable_and_distinct():
    assert row_seed(42, "knowedit_zsre-00000", 1, 0) == row_seed(42, "knowedit_zsre-00000", 1, 0)
    assert len({row_seed(42, "r", lvl, i) for lvl in range(1, 7) for i in range(5)}) == 30


def test_samples_do_not_depend_on_batch_composition(smollm2):
    model, tokenizer = smollm2
    settings = load_task("zsre-fast").uncertainty
    import dataclasses
    settings = dataclasses.replace(settings, max_new_tokens=10, samples_per_paraphrase=2)
    qs = ["Which family does Epaspidoceras belong to?", "Epaspidoceras belongs to which family?",
          "Could you tell me, in a few words, the family that Epaspidoceras is classified under?"]
    full = sample_responses(model, tokenizer, qs, "rec", [1, 2, 3], settings, 42)
    again = sample_responses(model, tokenizer, qs, "rec", [1, 2, 3], settings, 42)
    alone = sample_responses(model, tokenizer, qs[1:2], "rec", [2], settings, 42)
    assert full == again
    assert alone[0] == full[1]          # same row seed -> same answer without the other rows' padding
    other = sample_responses(model, tokenizer, qs, "rec", [1, 2, 3], settings, 7)
    assert other != full                # a different task seed draws different answers
    assert all(len(row) == 2 for row in full)


def test_the_checkpoints_generation_defaults_never_reach_the_sampler(smollm2):
    """A checkpoint whose generation_config carries penalties, an n-gram block, a minimum length and suppressed
    tokens samples exactly what a neutral one does: only the seeded sampler shapes the scores."""
    import copy
    import dataclasses

    from editprobe.benchmark.sampling import effective_settings, pinned_config

    model, tokenizer = smollm2
    settings = dataclasses.replace(load_task("zsre-fast").uncertainty, max_new_tokens=12, samples_per_paraphrase=2)
    questions = ["What is the capital of France?", "Who wrote Hamlet?"]
    neutral = sample_responses(model, tokenizer, questions, "r1", [1, 2], settings, 42)
    saved = copy.deepcopy(model.generation_config)
    try:
        model.generation_config.update(repetition_penalty=5.0, no_repeat_ngram_size=1, min_new_tokens=10,
                                       suppress_tokens=[tokenizer.eos_token_id], bad_words_ids=[[tokenizer.eos_token_id]])
        hostile = sample_responses(model, tokenizer, questions, "r1", [1, 2], settings, 42)
        recorded = effective_settings(pinned_config(model, tokenizer, 12), settings)
    finally:
        model.generation_config = saved
    assert hostile == neutral
    assert recorded["repetition_penalty"] == 1.0 and recorded["no_repeat_ngram_size"] == 0
    assert recorded["suppress_tokens"] is None and recorded["do_sample"] is False
    assert recorded["sampler"]["top_k"] == 0 and recorded["sampler"]["top_p"] == 0.9


# --------------------------------------------------------------------------- the fast engine draws the same samples

def test_nucleus_pick_equals_the_full_sort_rule():
    """The partial-sort pick against the sort-based rule checked by hand above, on peaked rows (nucleus among the
    first candidates), flat rows (nucleus wider than every candidate count: the full-sort fallback) and top-k."""
    from editprobe.benchmark.sampling import nucleus_pick

    gen = torch.Generator().manual_seed(0)
    vocab = 3000
    logits = torch.randn(48, vocab, generator=gen)
    logits[:16] *= 12.0                       # peaked: a handful of tokens hold the mass
    logits[16:32] *= 3.0                      # in between: tens to hundreds of tokens
    logits[32:] *= 0.05                       # flat: the nucleus spans most of the vocabulary
    uniforms = torch.rand(48, 1, generator=gen, dtype=torch.float64)
    for top_p, top_k, temperature in [(0.9, 0, 1.0), (0.5, 0, 0.7), (1.0, 0, 1.0), (0.9, 5, 1.0), (0.95, 200, 1.3)]:
        reference = SeededNucleusSampler(uniforms, 0, temperature, top_p, top_k)(torch.zeros(48, 0), logits)
        for candidates in [(8,), (8, 64), (64, 1024)]:
            picked = nucleus_pick(logits, uniforms[:, 0], temperature, top_p, top_k, candidates)
            assert torch.equal(picked, reference.argmax(-1)), (top_p, top_k, candidates)


def test_the_decode_engine_draws_what_generate_draws(smollm2):
    """Shared prefill over the K samples, rows leaving the batch and the partial sort change the work, not the
    samples: the same seeds give the same answers as transformers' generate with the seeded sampler, alone and with
    several records in one batch."""
    import dataclasses

    from editprobe.benchmark.sampling import sample_many

    model, tokenizer = smollm2
    settings = dataclasses.replace(load_task("zsre-fast").uncertainty, max_new_tokens=24, samples_per_paraphrase=3)
    groups = [(["Which family does Epaspidoceras belong to?", "Epaspidoceras belongs to which family?"],
               "rec-a", [1, 2], 42),
              (["What is the capital of France?", "Name the city that is the capital of France, please.",
                "Who wrote Hamlet?"], "rec-b", [1, 2, 3], 7)]
    reference = [sample_many(model, tokenizer, [g], settings, engine="generate")[0] for g in groups]
    assert sample_many(model, tokenizer, groups, settings) == reference
    assert [sample_many(model, tokenizer, [g], settings)[0] for g in groups] == reference
    lengths = {len(tokenizer(a)["input_ids"]) for rec in reference for row in rec for a in row}
    assert len(lengths) > 1                   # rows ended at different steps, so rows did leave the batch


def test_context_samples_match_generate(smollm2):
    """The self-sampled texts (context templates, the ``self`` covariance corpus) through the fast engine equal
    what generate with the seeded sampler writes for the same row seeds."""
    from editprobe.benchmark.editors.context import _row_seed, sample_texts
    from editprobe.benchmark.sampling import pinned_config, row_uniforms, seeded_generate

    model, tokenizer = smollm2
    fast = sample_texts(model, tokenizer, ("The", "Because"), 3, 12, seed=5, top_k=0, top_p=0.95)
    slow = []
    for opener in ("The", "Because"):
        ids = torch.tensor([tokenizer(opener, add_special_tokens=False)["input_ids"]] * 3)
        sampler = SeededNucleusSampler(row_uniforms([_row_seed(5, opener, r) for r in range(3)], 12),
                                       ids.shape[1], 1.0, 0.95, 0)
        out = seeded_generate(model, ids, torch.ones_like(ids), sampler, pinned_config(model, tokenizer, 12))
        slow.extend(tokenizer.batch_decode(out, skip_special_tokens=True))
    assert fast == slow and len(set(fast)) == 6
