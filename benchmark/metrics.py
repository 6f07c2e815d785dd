"""Standard model-editing metrics with EasyEdit/KnowEdit definitions, so numbers compare with published tables.

Edit Success (reliability, generalization, portability) and locality are teacher-forced token metrics, as in
EasyEdit's ``test_prediction_acc``: the prompt and ``" " + target`` are tokenised together, the model reads the whole
sequence once, and the argmax at each position that predicts a target token is compared with that token (accuracy)
or with the pre-edit argmax (locality). Fluency is ROME's weighted bigram/trigram entropy. Adoption counts
free-form samples that mention the new or the old answer.
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import torch

from editprobe.benchmark.protocols import PROTOCOLS  # noqa: F401  (re-exported; its home is torch-free)


def target_token_ids(tokenizer, prompt: str, target: str) -> tuple[list[int], list[int]]:
    """Token ids of ``prompt`` and of ``" " + target.strip()`` as they occur after it.

    As EasyEdit does, ``prompt + " " + target`` is tokenised in one go and split at the length of the prompt tokenised
    alone, so a BOS the tokenizer adds (LLaMA) stays with the prompt and the target gets the ids it has in context.
    """
    prompt_ids = tokenizer(prompt)["input_ids"]                         # [P], BOS included if the tokenizer adds one
    full_ids = tokenizer(prompt + " " + target.strip())["input_ids"]    # [P + T]
    target_ids = full_ids[len(prompt_ids):]                             # [T]
    if not target_ids:
        raise ValueError(f"target {target!r} adds no tokens after prompt {prompt!r}")
    return list(prompt_ids), list(target_ids)


@torch.no_grad()
def teacher_forced_argmax(model, tokenizer, prompts: list[str], targets: list[str],
                          batch_size: int = 16) -> list[list[int]]:
    """For each (prompt, target), the argmax token at each position that predicts a target token.

    Those are positions ``len(prompt)-1 .. len(prompt)+len(target)-2`` of the unpadded sequence. Batches are padded on
    the LEFT with an attention mask and position ids counted from the first real token, so a sequence gets the same
    predictions alone or in a batch.
    """
    if len(prompts) != len(targets):
        raise ValueError(f"{len(prompts)} prompts but {len(targets)} targets")
    pairs = [target_token_ids(tokenizer, p, t) for p, t in zip(prompts, targets)]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0  # masked out, any id will do
    device = next(model.parameters()).device
    out: list[list[int]] = []
    for start in range(0, len(pairs), batch_size):
        seqs = [p + t for p, t in pairs[start:start + batch_size]]
        width = max(len(s) for s in seqs)
        input_ids = torch.tensor([[pad_id] * (width - len(s)) + s for s in seqs], device=device)       # [B, W]
        mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], device=device)      # [B, W]
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)                                              # [B, W]
        logits = model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids).logits      # [B, W, V]
        argmax = logits.argmax(-1).tolist()                                                            # [B][W]
        for row, (_, t) in zip(argmax, pairs[start:start + batch_size]):
            # Left padding right-aligns every sequence: the target is the last len(t) tokens,
            # predicted from positions W-len(t)-1 .. W-2.
            out.append(row[width - len(t) - 1:width - 1])
    return out


def token_accuracy(predicted: list[int], target: list[int]) -> float:
    """Mean elementwise equality of predicted and target token ids (EasyEdit's per-prompt accuracy)."""
    if len(predicted) != len(target) or not target:
        raise ValueError(f"need equal, non-empty lengths; got {len(predicted)} predicted and {len(target)} target")
    return float(np.mean(np.equal(predicted, target)))


def edit_accuracy(model, tokenizer, prompts: list[str], targets: list[str], batch_size: int = 16) -> list[float]:
    """Teacher-forced token accuracy of each target after its prompt.

    Reliability: edit prompt + ``alt``; generalization: rephrase prompt + ``alt``; portability: probe prompt +
    ``answers[0]``.
    """
    argmax = teacher_forced_argmax(model, tokenizer, prompts, targets, batch_size)
    return [token_accuracy(pred, target_token_ids(tokenizer, p, t)[1])
            for pred, p, t in zip(argmax, prompts, targets)]


def locality_agreement(pre_argmax: list[list[int]], post_argmax: list[list[int]]) -> list[float]:
    """Per locality probe, the share of teacher-forced argmax tokens unchanged by the edit.

    Both inputs come from ``teacher_forced_argmax`` over the same probes (prompt, ``answers[0]``), before and after
    the edit; this is EasyEdit's KnowEdit locality, ``mean(pre == post)`` per probe.
    """
    if len(pre_argmax) != len(post_argmax):
        raise ValueError(f"{len(pre_argmax)} pre-edit probes but {len(post_argmax)} post-edit probes")
    return [token_accuracy(post, pre) for pre, post in zip(pre_argmax, post_argmax)]


_WORD = re.compile(r"\w+|[^\w\s]")  # words and single punctuation marks, close to nltk.word_tokenize


def _ngram_entropy_bits(tokens: list[str], n: int) -> float:
    """Base-2 Shannon entropy of the n-gram frequency distribution of ``tokens``; 0 when there are no n-grams."""
    counts = np.array(list(Counter(zip(*(tokens[i:] for i in range(n)))).values()), dtype=float)  # [types]
    if counts.size == 0:
        return 0.0
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def ngram_entropy(texts: list[str], lowercase: bool = False) -> float:
    """Fluency: ROME's weighted n-gram entropy, averaged over texts.

    Per text: ``mean([2/3 * H_2, 4/3 * H_3]) = H_2 / 3 + 2 * H_3 / 3`` with ``H_n = -sum p log2 p`` over the
    relative frequencies of its word n-grams; over texts: the arithmetic mean. Source: kmeng01/rome,
    experiments/py/eval_utils_counterfact.py (``n_gram_entropy``, ``compute_n_gram_entropy``, ``compute_freq``),
    copied unchanged into EasyEdit's evaluate_utils.py. ROME splits words with ``nltk.word_tokenize`` and keeps case;
    here a regex splits words and punctuation (no NLTK data), so contractions ("don't") split differently.
    ``lowercase=True`` folds case first; it departs from the reference and is off by default.
    """
    if not texts:
        raise ValueError("ngram_entropy needs at least one text")
    per_text = []
    for text in texts:
        tokens = _WORD.findall(text.lower() if lowercase else text)
        per_text.append(np.mean([2 / 3 * _ngram_entropy_bits(tokens, 2), 4 / 3 * _ngram_entropy_bits(tokens, 3)]))
    return float(np.mean(per_text))


def _alias_pattern(alias: str) -> re.Pattern:
    """Whole-alias match: no word character right before or after, any run of whitespace inside."""
    body = r"\s+".join(re.escape(part) for part in alias.split())
    return re.compile(rf"(?<!\w){body}(?!\w)", re.IGNORECASE)


def mentions(text: str, aliases: list[str]) -> bool:
    """True if ``text`` contains any alias, case-insensitively and as a whole word or phrase.

    "US" does not match inside "must", "U.S.S.R." matches before a full stop or comma. Being case-insensitive, a
    short acronym alias also matches an ordinary word ("US" matches "us").
    """
    return any(_alias_pattern(a).search(text) for a in aliases if a.strip())


def adoption_rates(responses: list[str], new_aliases: list[str],
                   old_aliases: list[str]) -> dict[str, float | None]:
    """Share of free-form responses mentioning the new target, and the old answer (None with no old aliases)."""
    if not responses:
        raise ValueError("adoption_rates needs at least one response")
    new = float(np.mean([mentions(r, new_aliases) for r in responses]))
    old = float(np.mean([mentions(r, old_aliases) for r in responses])) if any(a.strip() for a in old_aliases) else None
    return {"new": new, "old": old}
