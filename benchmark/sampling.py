"""Batched, seeded nucleus sampling of K responses to each of M paraphrases.

One ``generate`` call per record produces all M*K responses. Each row draws from its own stream of
uniforms, seeded by (task seed, record id, paraphrase level, sample index), and picks its token by
inverse-CDF over the nucleus. The same rows therefore get the same random numbers before and after
an edit (common random numbers: ΔU measures the edit, not sampling noise), and a record's samples do
not depend on which other records ran or in what order.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from editprobe.benchmark.tasks import UncertaintySettings

#: Version of the sampling code: part of the pre-edit cache key, so a changed sampler never pairs a stale pre-edit
#: pass with a fresh post-edit one. Bump it whenever the same seeds could give different samples.
SAMPLER_VERSION = 2


def row_seed(task_seed: int, record_id: str, level: int, sample: int) -> int:
    """A 63-bit seed for one sampled response (stable across processes and platforms)."""
    digest = hashlib.sha256(f"{task_seed}|{record_id}|{level}|{sample}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


class SeededNucleusSampler(LogitsProcessor):
    """Replaces the scores by a one-hot choice drawn per row from its own uniforms (used with greedy decoding).

    Sampling: p = softmax(logits / T); optional top-k; the nucleus is the smallest prefix of the sorted
    distribution whose mass reaches top_p; the token is the first whose renormalised cumulative mass
    exceeds the row's uniform u_t.
    """

    def __init__(self, uniforms: torch.Tensor, prompt_length: int, temperature: float, top_p: float, top_k: int):
        self.uniforms = uniforms            # (B, max_new_tokens) in [0, 1)
        self.prompt_length = prompt_length  # padded prompt length (left padding)
        self.temperature, self.top_p, self.top_k = temperature, top_p, top_k

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = input_ids.shape[1] - self.prompt_length
        probs = torch.softmax(scores.float() / self.temperature, dim=-1)           # (B, V)
        sorted_p, order = probs.sort(dim=-1, descending=True)                     # (B, V)
        keep = (sorted_p.cumsum(-1) - sorted_p) < self.top_p                      # mass before < top_p
        if self.top_k > 0:
            keep[:, self.top_k:] = False
        sorted_p = sorted_p * keep
        cdf = sorted_p.cumsum(-1)                                                 # (B, V)
        u = self.uniforms[:, step].to(cdf.device, cdf.dtype).unsqueeze(1) * cdf[:, -1:]
        pick = torch.searchsorted(cdf, u, right=True).clamp_max(cdf.shape[1] - 1)  # (B, 1)
        token = order.gather(1, pick)
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(1, token, 0.0)


def render_prompts(tokenizer, questions: list[str], settings: UncertaintySettings) -> list[str]:
    """The text fed to the model for each question (chat template with an explicit system message)."""
    if not settings.chat_template or getattr(tokenizer, "chat_template", None) is None:
        return list(questions)
    rendered = []
    for q in questions:
        messages = [{"role": "user", "content": q}]
        if settings.system_prompt:
            messages.insert(0, {"role": "system", "content": settings.system_prompt})
        rendered.append(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    return rendered


@torch.no_grad()
def sample_responses(model, tokenizer, questions: list[str], record_id: str, levels: list[int],
                     settings: UncertaintySettings, task_seed: int) -> list[list[str]]:
    """K responses to each of the M questions (one per level) -> [M][K] strings, in one generate call."""
    k = settings.samples_per_paraphrase
    prompts = [p for p in render_prompts(tokenizer, questions, settings) for _ in range(k)]  # M*K rows
    seeds = [row_seed(task_seed, record_id, level, i) for level in levels for i in range(k)]
    uniforms = torch.stack([torch.rand(settings.max_new_tokens, generator=torch.Generator().manual_seed(s),
                                       dtype=torch.float64) for s in seeds])  # (M*K, T)
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    sampler = SeededNucleusSampler(uniforms, enc["input_ids"].shape[1], settings.temperature,
                                   settings.top_p, settings.top_k)
    config = pinned_config(model, tokenizer, settings.max_new_tokens)
    out = seeded_generate(model, enc["input_ids"], enc["attention_mask"], sampler, config)
    texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    texts = [t.strip() for t in texts]
    return [texts[j * k:(j + 1) * k] for j in range(len(questions))]


# --------------------------------------------------------------------------- generate with our sampler only

def stop_ids(model, tokenizer) -> list[int]:
    """Every id that ends a response: the tokenizer's EOS and the model's own."""
    ids = {tokenizer.eos_token_id}
    eos = model.generation_config.eos_token_id
    ids.update(eos if isinstance(eos, list) else [eos])
    return sorted(i for i in ids if i is not None)


def pinned_config(model, tokenizer, max_new_tokens: int) -> GenerationConfig:
    """Greedy decoding over the seeded sampler's one-hot scores: every option that adds a logits processor or
    changes the search is set to its neutral value, so no penalty, n-gram block, minimum length or token
    suppression runs before the sampler."""
    stop = stop_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop[0]
    return GenerationConfig(**{**GenerationConfig._get_default_generation_params(), "do_sample": False,
                               "num_beams": 1, "max_new_tokens": max_new_tokens, "max_length": None,
                               "eos_token_id": stop, "pad_token_id": pad, "bos_token_id": None})


@contextlib.contextmanager
def _no_model_defaults(model):
    """transformers fills every option a passed config leaves unset from ``model.generation_config`` (a checkpoint's
    repetition penalty, no-repeat n-grams, bad words ...); a neutral one there for the call leaves nothing to fill."""
    saved = model.generation_config
    model.generation_config = GenerationConfig()
    try:
        yield
    finally:
        model.generation_config = saved


def seeded_generate(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, sampler: LogitsProcessor,
                    config: GenerationConfig) -> torch.Tensor:
    """``model.generate`` in which the seeded sampler is the only thing that shapes the scores."""
    with _no_model_defaults(model):
        return model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config,
                              logits_processor=LogitsProcessorList([sampler]))


def effective_settings(config: GenerationConfig, settings: UncertaintySettings | None = None) -> dict:
    """What generate runs with (the pinned config after transformers' own defaults), for the results file."""
    merged = copy.deepcopy(config)
    merged.update(**GenerationConfig._get_default_generation_params(), defaults_only=True)
    out = {k: v for k, v in merged.to_dict().items() if not k.startswith("_") and k != "transformers_version"}
    if settings is not None:
        out["sampler"] = {"kind": "seeded nucleus (inverse CDF per row)", "version": SAMPLER_VERSION,
                          "temperature": settings.temperature, "top_p": settings.top_p, "top_k": settings.top_k}
    return out
