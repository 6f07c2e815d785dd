"""Text the model writes itself: ROME/MEMIT context templates and the offline ``self`` covariance corpus.

ROME (Meng et al. 2022a, Sec. 3.1 and Eq. 3) averages the key over prefixes ``x_j`` sampled from the model, so
the key describes the subject in many contexts rather than in the one edit prompt; MEMIT does the same. A
template is a short sample with ``{`` and ``}`` removed and ``". {}"`` appended, plus the bare ``"{}"``. MEMIT
seeds the samples with five common openers; ROME's ``context_template_length_params`` (length, count) pairs say
how many samples of how many new tokens to draw.

Sampling is seeded per row (common random numbers, as in ``editprobe.benchmark.sampling``), so the same model gives the
same templates in every process; they are cached per model in ``{cache_dir}/context_templates/{model}.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import torch

from editprobe.benchmark.sampling import decode, pad_id, row_uniforms, stop_ids

#: MEMIT's openers for context samples (memit_main.get_context_templates).
OPENERS = ("The", "Therefore", "Because", "I", "You")
#: ROME's generate_fast keeps the 5 most likely tokens when sampling context templates.
TEMPLATE_TOP_K = 5


def model_cache_name(model: torch.nn.Module) -> str:
    """The folder/file name caches use for ``model``: the last part of its name or path (EasyEdit's choice).

    A model built in memory (no name) is named by its type and a digest of the start of its first and last
    weights, so two random models never share cached statistics.
    """
    name = str(getattr(model.config, "_name_or_path", "") or "").rstrip("/").rsplit("/", 1)[-1]
    if name:
        return name
    params = list(model.parameters())
    h = hashlib.sha256()
    for p in (params[0], params[-1]):  # the first 4096 values of each tell random initialisations apart
        h.update(p.detach().reshape(-1)[:4096].float().cpu().numpy().tobytes())
    return f"{model.config.model_type}-{h.hexdigest()[:12]}"


def _row_seed(seed: int, opener: str, row: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}|{opener}|{row}".encode()).digest()[:8], "big") >> 1


#: Rows per decode call when sampling texts. Measured on the 2-core CPU with SmolLM2 (48 new tokens, one opener):
#: 174 ms a row at 30 rows, 138 at 60, 124 at 120, so several openers share a call up to this many rows.
TEXT_BATCH_ROWS = 120


@torch.no_grad()
def sample_texts(model, tokenizer, openers: tuple[str, ...], per_opener: int, new_tokens: int, seed: int,
                 top_k: int = 0, top_p: float = 1.0, batch_rows: int = TEXT_BATCH_ROWS,
                 desc: str = "sampling texts") -> list[str]:
    """``per_opener`` samples of up to ``new_tokens`` tokens after each opener, opener included, in a fixed order.

    Row ``i`` after opener ``o`` draws its uniforms from seed ``(seed, o, i)``; the token is picked by inverse CDF
    over the top-k / nucleus of ``softmax(logits)``. Each opener is prefilled once for its rows, and several
    openers share a call (left-padded) up to ``batch_rows`` rows.
    """
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    stop = stop_ids(model, tokenizer)
    pad = pad_id(tokenizer, stop)
    chunk = max(1, min(per_opener, batch_rows))
    # units of (opener, first row, rows): an opener's rows split into chunks, chunks of equal size grouped per call
    units = [(o, start, min(chunk, per_opener - start)) for o in openers for start in range(0, per_opener, chunk)]
    calls: list[list[tuple[str, int, int]]] = []
    for unit in units:
        if calls and calls[-1][0][2] == unit[2] and sum(u[2] for u in calls[-1]) + unit[2] <= batch_rows:
            calls[-1].append(unit)
        else:
            calls.append([unit])
    texts: list[str] = []
    # disable=None: a bar on a terminal, silence in logs and tests
    bar = tqdm(total=len(openers) * per_opener, desc=desc, unit="text", disable=None, leave=False)
    for call in calls:
        n = call[0][2]
        prompts = [tokenizer(o, add_special_tokens=False)["input_ids"] for o, _, _ in call]
        width = max(map(len, prompts))
        ids = torch.tensor([[pad] * (width - len(q)) + q for q in prompts], device=device)           # [P, W]
        mask = torch.tensor([[0] * (width - len(q)) + [1] * len(q) for q in prompts], device=device)  # left padding
        uniforms = row_uniforms([_row_seed(seed, o, r) for o, start, _ in call for r in range(start, start + n)],
                                new_tokens)                                                           # [P * n, T]
        out = decode(model, ids, mask, uniforms, repeats=n, temperature=1.0, top_p=top_p, top_k=top_k,
                     max_new_tokens=new_tokens, stop=stop, pad=pad)                                    # [P * n, W + T]
        texts.extend(tokenizer.batch_decode(out, skip_special_tokens=True))
        bar.update(len(call) * n)
    bar.close()
    return texts


def _as_template(text: str) -> str:
    text = re.sub(r"\s+", " ", text.replace("{", " ").replace("}", " ")).strip()
    return f"{text}. {{}}"


def _templates_key(length_params: tuple[tuple[int, int], ...], seed: int) -> str:
    return "|".join(f"{length}x{count}" for length, count in length_params) + f"|seed={seed}|top_k={TEMPLATE_TOP_K}"


def context_templates(model, tokenizer, cache_dir: Path, length_params: tuple[tuple[int, int], ...] = ((10, 5),),
                      seed: int = 0) -> list[str]:
    """``["{}"]`` plus, per ``(length, count)``, ``count`` model samples of ``length`` new tokens as ``"<text>. {}"``.

    The ``count`` samples of one length are spread over MEMIT's openers (``count // 5`` each, the remainder to the
    first ones). Cached per model in ``{cache_dir}/context_templates/{model}.json``, keyed by the parameters.
    """
    length_params = tuple((int(length), int(count)) for length, count in length_params)
    path = Path(cache_dir) / "context_templates" / f"{model_cache_name(model)}.json"
    key = _templates_key(length_params, seed)
    cached = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    if key in cached:
        return cached[key]
    templates = ["{}"]
    for length, count in length_params:
        for j, opener in enumerate(OPENERS):
            n = count // len(OPENERS) + (1 if j < count % len(OPENERS) else 0)
            if n:
                texts = sample_texts(model, tokenizer, (opener,), n, length, seed=seed + length, top_k=TEMPLATE_TOP_K,
                                     desc="context templates")
                templates.extend(_as_template(t) for t in texts)
    cached = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}  # another process may have added
    cached[key] = templates
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(cached, indent=1, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)
    return templates
