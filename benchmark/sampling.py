"""Batched, seeded nucleus sampling of K responses to each of M paraphrases.

Each row draws from its own stream of uniforms, seeded by (task seed, record id, paraphrase level, sample index),
and picks its token by inverse-CDF over the nucleus. The same rows therefore get the same random numbers before
and after an edit (common random numbers: ΔU measures the edit, not sampling noise), and a record's samples do
not depend on which other records ran or in what order.

Two engines draw the same samples from the same seeds:

* ``decode`` (the default): each unique prompt is prefilled once and its key/value cache shared by its K rows;
  rows leave the batch when they end; the nucleus is found among the top candidates (a partial sort), falling
  back to a full sort only for rows whose nucleus is wider than the candidates;
* ``generate``: transformers' ``generate`` with :class:`SeededNucleusSampler` as the only logits processor, every
  prompt repeated K times (the reference the fast engine is tested against, and today's path in
  ``benchmarks/edit_throughput.py``).
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
#: 3: the decode engine. Its logits come from other batch shapes than generate's, so in a rare near-tie (seen in
#: about 1 of 10,000 draws from flat 0.95-nuclei of thousands of tokens) float rounding picks the neighbouring token;
#: a pre-edit pass from version 2 is therefore never paired with a post-edit pass from version 3.
SAMPLER_VERSION = 3


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


def prompt_format(tokenizer, settings: UncertaintySettings) -> str:
    """How :func:`render_prompts` presents a question to this model, in words (recorded in every results file): a
    base model without a chat template gets the bare question, and the task's system prompt is then not applied."""
    if not settings.chat_template:
        return "bare question (the task asks for no chat template)"
    if getattr(tokenizer, "chat_template", None) is None:
        return "bare question (the tokenizer has no chat template, so no system prompt either)"
    return "chat template with the task's system message" if settings.system_prompt else "chat template"


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


#: Candidate counts the fast engine tries in turn before a full sort (a nucleus of top_p = 0.9 usually spans a few
#: dozen tokens of a chat model's vocabulary, sometimes hundreds; ``topk`` of 64 is ~60x cheaper than a full sort).
NUCLEUS_CANDIDATES = (64, 1024)


def nucleus_pick(scores: torch.Tensor, uniforms: torch.Tensor, temperature: float, top_p: float, top_k: int,
                 candidates: tuple[int, ...] = NUCLEUS_CANDIDATES) -> torch.Tensor:
    """The token :class:`SeededNucleusSampler` picks for each row, without sorting the whole vocabulary.

    scores (B, V), uniforms (B,) -> token ids (B,). The top ``c`` probabilities come out of ``topk`` in descending
    order, exactly the head of the full sort; when they hold at least ``top_p`` of the mass, every later token has
    mass-before >= top_p and lies outside the nucleus, so the pick over the head equals the pick over the whole
    sorted row (cumsum on the CPU accumulates in order, so the head's partial sums are the same numbers). Rows whose
    nucleus is wider try the next candidate count, and the full sort last. With top-k, the head of k suffices.
    """
    probs = torch.softmax(scores.float() / temperature, dim=-1)                    # (B, V)
    width = probs.shape[-1]
    tokens = torch.empty(probs.shape[0], dtype=torch.long, device=probs.device)
    todo = torch.arange(probs.shape[0], device=probs.device)
    sizes = sorted({min(c, width) for c in candidates if c < width}) + [width]
    if 0 < top_k < width:
        sizes = [s for s in sizes if s < top_k] + [top_k]
    for c in sizes:
        rows = probs[todo]
        if c == width:
            head_p, head_ids = rows.sort(dim=-1, descending=True)
        else:
            head_p, head_ids = rows.topk(c, dim=-1)                               # (b, c), descending
        cum = head_p.cumsum(-1)
        fits = (cum[:, -1] >= top_p) | (c == width) | (c == top_k)
        if fits.any():
            tokens[todo[fits]] = _inverse_cdf(head_p[fits], cum[fits], head_ids[fits], uniforms[fits], top_p, top_k)
        todo, uniforms = todo[~fits], uniforms[~fits]
        if todo.numel() == 0:
            break
    return tokens


def _inverse_cdf(sorted_p, cum, order, uniforms, top_p: float, top_k: int) -> torch.Tensor:
    keep = (cum - sorted_p) < top_p                                               # mass before < top_p
    if top_k > 0:
        keep[:, top_k:] = False
    cdf = (sorted_p * keep).cumsum(-1)
    u = uniforms.to(cdf.device, cdf.dtype).unsqueeze(1) * cdf[:, -1:]
    pick = torch.searchsorted(cdf, u, right=True).clamp_max(cdf.shape[1] - 1)
    return order.gather(1, pick).squeeze(1)


class ActiveRows:
    """Which of the original rows are in the batch at the current forward pass (hooks that treat rows differently,
    e.g. one edit per record, read ``rows``)."""

    def __init__(self, n: int, device):
        self.rows = torch.arange(n, device=device)


@torch.no_grad()
def decode(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, uniforms: torch.Tensor, *, repeats: int,
           temperature: float, top_p: float, top_k: int, max_new_tokens: int, stop: list[int], pad: int,
           active: ActiveRows | None = None) -> torch.Tensor:
    """Seeded nucleus sampling of ``repeats`` rows per prompt, the same tokens ``generate`` + the sampler give.

    input_ids, attention_mask (P, L), left-padded; uniforms (P*repeats, T), rows prompt-major (prompt p's samples
    are rows p*repeats ... p*repeats + repeats-1). Returns (P*repeats, L + T') like ``generate``: the prompt, then
    each row's tokens up to and including its stop id, then ``pad``. The prompts are prefilled once and the cache
    is repeated over their samples; a row that has ended leaves the batch.
    """
    from transformers import DynamicCache

    device = input_ids.device
    n = input_ids.shape[0] * repeats
    active = active or ActiveRows(n, device)
    active.rows = torch.arange(input_ids.shape[0], device=device) * repeats  # prefill: each prompt's first row
    positions = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
    cache = DynamicCache(config=model.config)
    key = _cache_keyword(model)
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                use_cache=True, logits_to_keep=1, **{key: cache})
    logits = out.logits[:, -1]
    if repeats > 1:
        cache.batch_repeat_interleave(repeats)
        logits = logits.repeat_interleave(repeats, dim=0)
        attention_mask = attention_mask.repeat_interleave(repeats, dim=0)
        positions = positions.repeat_interleave(repeats, dim=0)
    rows = torch.arange(n, device=device)
    last = positions[:, -1]
    stop_t = torch.tensor(stop, device=device)
    new = torch.full((n, max_new_tokens), pad, dtype=torch.long, device=device)
    length = 0
    for step in range(max_new_tokens):
        tokens = nucleus_pick(logits, uniforms[rows.cpu(), step], temperature, top_p, top_k)
        new[rows, step] = tokens
        length = step + 1
        going = ~torch.isin(tokens, stop_t)
        if step == max_new_tokens - 1 or not going.any():
            break
        if not going.all():
            keep = going.nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            rows, tokens, attention_mask, last = rows[keep], tokens[keep], attention_mask[keep], last[keep]
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(len(rows), 1)], dim=1)
        last = last + 1
        active.rows = rows
        out = model(input_ids=tokens[:, None], attention_mask=attention_mask, position_ids=last[:, None],
                    use_cache=True, logits_to_keep=1, **{key: cache})
        logits = out.logits[:, -1]
    return torch.cat([input_ids.repeat_interleave(repeats, dim=0), new[:, :length]], dim=1)


def _cache_keyword(model) -> str:
    """transformers 5.2x renames a causal LM's ``past_key_values`` argument to ``cache``, model by model."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def row_uniforms(seeds: list[int], n: int) -> torch.Tensor:
    """(len(seeds), n) float64 uniforms, row i from its own generator seeded with seeds[i]."""
    return torch.stack([torch.rand(n, generator=torch.Generator().manual_seed(s), dtype=torch.float64)
                        for s in seeds])


@torch.no_grad()
def sample_responses(model, tokenizer, questions: list[str], record_id: str, levels: list[int],
                     settings: UncertaintySettings, task_seed: int, engine: str = "decode") -> list[list[str]]:
    """K responses to each of the M questions (one per level) -> [M][K] strings."""
    return sample_many(model, tokenizer, [(questions, record_id, levels, task_seed)], settings, engine)[0]


@torch.no_grad()
def sample_many(model, tokenizer, groups: list[tuple[list[str], str, list[int], int]], settings: UncertaintySettings,
                engine: str = "decode", active: ActiveRows | None = None) -> list[list[list[str]]]:
    """The responses of several records in one batch: ``groups`` holds (questions, record id, levels, task seed)
    per record -> per record [M][K] strings. Each row keeps its own seed, so a record's samples are the same
    whichever records share its batch."""
    if engine not in ENGINES:
        raise ValueError(f"unknown sampling engine {engine!r}; known: {', '.join(ENGINES)}")
    k = settings.samples_per_paraphrase
    questions = [q for qs, _, _, _ in groups for q in qs]
    seeds = [row_seed(seed, rid, level, i) for _, rid, levels, seed in groups for level in levels for i in range(k)]
    uniforms = row_uniforms(seeds, settings.max_new_tokens)                        # (sum M * K, T)
    rendered = render_prompts(tokenizer, questions, settings)
    if engine == "generate":
        rendered = [p for p in rendered for _ in range(k)]
    enc = tokenizer(rendered, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    width = enc["input_ids"].shape[1]
    if engine == "generate":
        sampler = SeededNucleusSampler(uniforms, width, settings.temperature, settings.top_p, settings.top_k)
        config = pinned_config(model, tokenizer, settings.max_new_tokens)
        out = seeded_generate(model, enc["input_ids"], enc["attention_mask"], sampler, config)
    else:
        stop = stop_ids(model, tokenizer)
        out = decode(model, enc["input_ids"], enc["attention_mask"], uniforms, repeats=k,
                     temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k,
                     max_new_tokens=settings.max_new_tokens, stop=stop, pad=pad_id(tokenizer, stop), active=active)
    texts = [t.strip() for t in tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)]
    result, row = [], 0
    for qs, _, _, _ in groups:
        result.append([texts[row + j * k: row + (j + 1) * k] for j in range(len(qs))])
        row += len(qs) * k
    return result


#: Sampling engines (see the module docstring); both give the same samples.
ENGINES = ("decode", "generate")


def greedy_answers(model, tokenizer, questions: list[str], settings: UncertaintySettings,
                   max_new_tokens: int) -> list[str]:
    """One greedy answer per question (up to ``max_new_tokens``), rendered as the sampled responses are; the free
    answers ``editprobe judge`` scores. Every option that would change greedy search is neutral (pinned config)."""
    rendered = render_prompts(tokenizer, questions, settings)
    enc = tokenizer(rendered, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    width = enc["input_ids"].shape[1]
    with torch.no_grad(), _no_model_defaults(model):
        out = model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                             generation_config=pinned_config(model, tokenizer, max_new_tokens))
    return [t.strip() for t in tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)]


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
    pad = pad_id(tokenizer, stop)
    return GenerationConfig(**{**GenerationConfig._get_default_generation_params(), "do_sample": False,
                               "num_beams": 1, "max_new_tokens": max_new_tokens, "max_length": None,
                               "eos_token_id": stop, "pad_token_id": pad, "bos_token_id": None})


def pad_id(tokenizer, stop: list[int]) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop[0]


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
