"""Seeded nucleus sampling: the choice rule by hand, and independence from batch composition on SmolLM2."""

import math

import pytest
import torch

from benchmark.sampling import SeededNucleusSampler, row_seed, sample_responses
from benchmark.tasks import load_task


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


@pytest.fixture(scope="module")
def smollm2():
    from editprobe.models import load_model

    model, tokenizer, _ = load_model()
    return model, tokenizer


def test_samples_do_not_depend_on_batch_composition(smollm2):
    model, tokenizer = smollm2
    settings = load_task("zsre").uncertainty
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
