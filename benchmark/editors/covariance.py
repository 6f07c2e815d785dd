"""Second moment ``C = E[k k^T]`` of the keys (MLP output-projection inputs) over a text corpus.

ROME's rank-one update and MEMIT's least-squares update weigh directions of key space by ``C`` (ROME Eq. 2 and
Appendix A; MEMIT Eq. 14); AlphaEdit projects onto its near-null space. ``C`` is estimated over every token of
``n_samples`` texts from a configurable corpus:

* ``self`` — text the model samples itself from fixed openers with a fixed seed (the offline default);
* a local file or folder: ``.txt`` (one text per non-empty line) or ``.jsonl`` (field ``text``);
* a Hugging Face dataset name, optionally ``name:config`` (``wikipedia`` and ``wikitext`` default to ROME's and
  EasyEdit's configs). This needs the hub or a local ``datasets`` cache.

Statistics are cached in the ROME/EasyEdit layout
``{stats_dir}/{model}/{corpus}_stats/{module}_{dtype}_mom2_{n_samples}.npz`` with keys ``mom2.mom2`` (the *sum* of
``k k^T``, as ROME's ``SecondMoment``) and ``mom2.count`` (the number of keys), so stats files computed by ROME
or EasyEdit (e.g. ``wikipedia_stats``) are reused as they are when placed there.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from editprobe.benchmark.editors.context import model_cache_name, sample_texts
from editprobe.benchmark.editors.layers import EditSite

SELF_CORPUS = "self"
#: Openers for the ``self`` corpus: varied, content-free starts.
SELF_OPENERS = ("The", "In", "A", "It", "This", "He", "She", "They", "When", "After")
#: Hugging Face configs of the corpora ROME (wikipedia) and EasyEdit (wikitext) use.
HF_DEFAULT_CONFIGS = {"wikipedia": "20200501.en", "wikitext": "wikitext-103-raw-v1"}
DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class SecondMoment:
    """Sum of ``k k^T`` over ``count`` keys of one module; ``moment()`` is ``C = E[k k^T]``."""

    mom2: torch.Tensor     # [d_in, d_in], the running sum
    count: int
    path: Path
    corpus: str
    computed: bool         # False when read from an existing file

    def moment(self) -> torch.Tensor:
        return self.mom2 / self.count

    def provenance(self) -> dict:
        return {"corpus": self.corpus, "count": self.count, "path": str(self.path), "computed": self.computed}


def corpus_label(corpus: str) -> str:
    """The ``{corpus}`` part of the stats path: ``self``, a local file's stem, or the dataset name."""
    if corpus == SELF_CORPUS:
        return SELF_CORPUS
    path = Path(corpus)
    if path.exists():
        return path.stem if path.is_file() else path.name
    return corpus.split(":")[0].replace("/", "_")


def stats_path(stats_dir: Path, model_name: str, corpus: str, module_name: str, dtype: str, n_samples: int) -> Path:
    """ROME/EasyEdit layout: ``{stats_dir}/{model}/{corpus}_stats/{module}_{dtype}_mom2_{n}.npz``."""
    return Path(stats_dir) / model_name / f"{corpus_label(corpus)}_stats" / f"{module_name}_{dtype}_mom2_{n_samples}.npz"


def save_second_moment(path: Path, mom2: torch.Tensor, count: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + f".tmp{os.getpid()}.npz")
    np.savez(tmp, **{"mom2.mom2": mom2.cpu().numpy(), "mom2.count": np.asarray(count)})
    tmp.replace(path)


def load_second_moment(path: Path, corpus: str) -> SecondMoment:
    with np.load(path, allow_pickle=False) as data:
        if "mom2.mom2" not in data or "mom2.count" not in data:
            raise ValueError(f"{path}: not a second-moment stats file (needs keys mom2.mom2 and mom2.count, "
                             f"has {', '.join(data.files)})")
        return SecondMoment(torch.from_numpy(data["mom2.mom2"].copy()), int(data["mom2.count"]), path, corpus, False)


def _local_texts(path: Path, n: int) -> list[str]:
    files = sorted(p for p in path.rglob("*") if p.suffix in (".txt", ".jsonl")) if path.is_dir() else [path]
    texts: list[str] = []
    for f in files:
        for line in f.read_text(encoding="utf-8").splitlines():
            text = json.loads(line).get("text", "") if f.suffix == ".jsonl" and line.strip() else line
            if text.strip():
                texts.append(text)
            if len(texts) == n:
                return texts
    return texts


def _hub_texts(corpus: str, n: int) -> list[str]:
    name, _, config = corpus.partition(":")
    try:
        from datasets import load_dataset

        ds = load_dataset(name, config or HF_DEFAULT_CONFIGS.get(name), split="train", streaming=True)
        texts = []
        for row in ds:
            if row.get("text", "").strip():
                texts.append(row["text"])
            if len(texts) == n:
                break
        return texts
    except Exception as exc:  # offline, unknown name, gated dataset: one clear sentence
        raise RuntimeError(f"covariance corpus {corpus!r} could not be loaded from the Hugging Face hub "
                           f"({type(exc).__name__}: {exc}); offline, use mom2_dataset: self or a local "
                           f".txt/.jsonl file") from exc


def corpus_texts(corpus: str, n_samples: int, model, tokenizer, stats_dir: Path, seed: int,
                 sample_tokens: int) -> list[str]:
    """``n_samples`` texts of ``corpus``; self-sampled texts are cached beside the stats they feed."""
    if corpus == SELF_CORPUS:
        path = (Path(stats_dir) / model_cache_name(model) / f"{SELF_CORPUS}_stats"
                / f"texts_{n_samples}_seed{seed}_len{sample_tokens}.json")
        if path.exists():
            return json.loads(path.read_text(encoding="utf-8"))
        per_opener = math.ceil(n_samples / len(SELF_OPENERS))
        texts = sample_texts(model, tokenizer, SELF_OPENERS, per_opener, sample_tokens, seed, top_p=0.95,
                             desc="covariance corpus")
        texts = texts[:n_samples]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
        return texts
    if Path(corpus).exists():
        texts = _local_texts(Path(corpus), n_samples)
    else:
        texts = _hub_texts(corpus, n_samples)
    if not texts:
        raise ValueError(f"covariance corpus {corpus!r} has no non-empty text")
    return texts


class _SitesSeen(Exception):
    """Raised by the last site's hook to end a forward pass whose remaining layers are not needed."""


@torch.no_grad()
def accumulate_second_moments(model, tokenizer, sites: list[EditSite], texts: list[str], max_tokens: int,
                              dtype: torch.dtype, batch_size: int = 8) -> dict[str, tuple[torch.Tensor, int]]:
    """``(sum_t k_t k_t^T, count)`` of each site's input over every non-padding token of ``texts``.

    The forward pass stops once every site has seen its input (the layers above the deepest site cannot change it).
    """
    sums = {s.name: torch.zeros(s.d_in, s.d_in, dtype=dtype, device=s.weight.device) for s in sites}
    counts = {s.name: 0 for s in sites}
    mask_now: list[torch.Tensor] = []
    seen: set[str] = set()

    def hook_for(name):
        def hook(module, args):
            k = args[0].detach()                                           # [B, T, d_in]
            keep = mask_now[0].bool()                                      # [B, T]
            k = k[keep].to(dtype)                                          # [N, d_in]
            sums[name].addmm_(k.T, k)
            counts[name] += k.shape[0]
            seen.add(name)
            if len(seen) == len(sites):
                raise _SitesSeen
        return hook

    handles = [s.module.register_forward_pre_hook(hook_for(s.name)) for s in sites]
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    from tqdm.auto import tqdm

    try:
        for start in tqdm(range(0, len(texts), batch_size), desc="key statistics", unit="batch", disable=None,
                          leave=False):
            rows = [tokenizer(t)["input_ids"][:max_tokens] for t in texts[start:start + batch_size]]
            rows = [r for r in rows if r]
            width = max(map(len, rows))
            ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=device)        # [B, W]
            mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device)  # [B, W]
            mask_now[:] = [mask]
            seen.clear()
            try:
                model(input_ids=ids, attention_mask=mask, use_cache=False)
            except _SitesSeen:
                pass
    finally:
        for h in handles:
            h.remove()
    return {name: (sums[name].cpu(), counts[name]) for name in sums}


def second_moments(model, tokenizer, sites: list[EditSite], *, corpus: str, n_samples: int, dtype: str,
                   stats_dir: Path, seed: int = 0, sample_tokens: int = 128) -> dict[str, SecondMoment]:
    """The second moment of each site's keys: read from its stats file, else computed (all missing in one pass)."""
    if dtype not in DTYPES:
        raise ValueError(f"mom2_dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    name = model_cache_name(model)
    out: dict[str, SecondMoment] = {}
    missing = []
    for site in sites:
        path = stats_path(stats_dir, name, corpus, site.name, dtype, n_samples)
        if path.exists():
            out[site.name] = load_second_moment(path, corpus)
        else:
            missing.append((site, path))
    if missing:
        texts = corpus_texts(corpus, n_samples, model, tokenizer, stats_dir, seed, sample_tokens)
        acc = accumulate_second_moments(model, tokenizer, [s for s, _ in missing], texts, sample_tokens,
                                        DTYPES[dtype])
        for site, path in missing:
            mom2, count = acc[site.name]
            save_second_moment(path, mom2, count)
            out[site.name] = SecondMoment(mom2, count, path, corpus, True)
    return out
