"""In-context knowledge editing (IKE; Zheng et al., 2023, "Can We Edit Factual Knowledge by In-Context Learning?").

No weight changes: :meth:`IKEEditor.wrap_prompt` puts k demonstrations and the new fact in front of every probe::

    New fact: {demo fact}
    Prompt: {demo prompt} {demo answer}
                                        (k demonstrations, a blank line after each)
    New fact: {edit prompt} {target}
    Prompt: {probe}

The wrapped text ends with the probe itself, so the teacher-forced metrics read ``wrapped + " " + answer`` exactly as
a demonstration reads, and the runner can hand it to the chat template as the user's message (it contains no
special tokens; the chat template is applied after wrapping).

Demonstrations (paper §3.2). Each shows a fact and a prompt answered in its light:
* **copy** — the fact's own prompt, answered with the fact's answer;
* **update** — a rephrasing of the fact's prompt, answered with the fact's answer;
* **retain** — an unrelated prompt, answered with its own unchanged answer (the fact must not leak).
They are ranked by cosine similarity of their sentence embeddings to ``"New fact: {prompt} {target}\\nPrompt:
{prompt}"`` (the query EasyEdit uses); the ``k`` most similar are kept and ordered from least to most similar, so
the most similar one stands next to the query, as in the paper.

Where they come from. The other records of the dataset config are not the editor's to see (they are what is being
measured), so the pool is either
* ``pool_path``: a JSONL file of ``{"prompt", "target", "rephrase"?}`` examples, or EasyEdit's flattened
  CounterFact JSON (the preset ``counterfact-k16`` reads the training split ``training/counterfact_train.json``
  of the data folder: 10,000 records, never an evaluation set, as the IKE paper draws demonstrations from
  CounterFact's training part with k = 16). Example ``i`` gives a copy demonstration, an update demonstration
  when it has a rephrase, and a retain demonstration: its neighbourhood prompt with that prompt's unchanged
  answer where the pool has one (CounterFact), else the next example's prompt and target. The pool is embedded
  once; demonstrations that state or ask the edit prompt itself are left out for that edit, so a probe is never
  among its own demonstrations. Deviation from the paper: the k most similar demonstrations are taken whatever
  their kind, not in a fixed 1:3:4 copy:update:retain ratio (EasyEdit retrieves the same way); or
* by default, templates derived from the request itself, in the paper's 1:3:4 copy:update:retain proportion:
  one copy, three updates whose prompts wrap the edit prompt in fixed phrasings ("Tell me: ...", "Regarding
  {subject}: ...", "Answer briefly. ..."), and four retains, each pairing the new fact with a common-knowledge
  question from :data:`RETAIN_FACTS` (those mentioning the subject or target are skipped).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar
from pathlib import Path

import numpy as np

from editprobe.benchmark.editors.base import EditHandle, Editor, EditRequest
from editprobe.paths import resolve_data_ref


@dataclass(frozen=True)
class IKEHparams:
    RANGES: ClassVar[dict] = {"k": (0, None, False)}

    k: int = 8
    pool_path: str | None = None               # JSONL of {prompt, target, rephrase?} or EasyEdit CounterFact JSON
                                               # ("data:REL" = under the data folder); None: request-derived pool
    embedding_model: str = "all-MiniLM-L6-v2"


@dataclass(frozen=True)
class Demonstration:
    kind: str       # "copy" | "update" | "retain"
    fact: str
    prompt: str
    answer: str

    def render(self) -> str:
        return f"New fact: {self.fact}\nPrompt: {self.prompt} {self.answer}\n\n"


# Common-knowledge questions for retain demonstrations (answers true in the world, untouched by the edit).
RETAIN_FACTS: tuple[tuple[str, str], ...] = (
    ("What is the capital of France?", "Paris"),
    ("Which planet is known as the Red Planet?", "Mars"),
    ("Who wrote Romeo and Juliet?", "William Shakespeare"),
    ("What is the largest ocean on Earth?", "the Pacific Ocean"),
    ("Which language is mainly spoken in Brazil?", "Portuguese"),
    ("On which continent is Kenya?", "Africa"),
    ("What is the chemical symbol of gold?", "Au"),
    ("How many legs does a spider have?", "eight"),
)

UPDATE_TEMPLATES: tuple[str, ...] = ("Tell me: {prompt}", "Regarding {subject}: {prompt}", "Answer briefly. {prompt}")
RATIO = {"copy": 1, "update": 3, "retain": 4}   # paper: copy:update:retain = 1:3:4


def new_fact(request: EditRequest) -> str:
    return f"{request.prompt} {request.target.strip()}"


def request_demonstrations(request: EditRequest) -> list[Demonstration]:
    """Copy, update and retain demonstrations built from the request alone (1:3:4, see the module docstring)."""
    fact, target = new_fact(request), request.target.strip()
    demos = [Demonstration("copy", fact, request.prompt, target)]
    demos += [Demonstration("update", fact, t.format(prompt=request.prompt, subject=request.subject), target)
              for t in UPDATE_TEMPLATES[:RATIO["update"]]]
    clash = [w.lower() for w in (request.subject, target) if w.strip()]
    unrelated = [(q, a) for q, a in RETAIN_FACTS if not any(w in q.lower() or w in a.lower() for w in clash)]
    demos += [Demonstration("retain", fact, q, a) for q, a in unrelated[:RATIO["retain"]]]
    return demos


def pool_demonstrations(examples: list[dict]) -> list[Demonstration]:
    """Copy, update (when rephrased) and retain demonstrations from a pool of {prompt, target, rephrase?,
    retain_prompt?, retain_answer?}. The retain demonstration asks the example's own unrelated prompt
    (CounterFact's neighbourhood prompt, answered with its unchanged answer) where it has one, else the next
    example's prompt and target."""
    demos = []
    for i, e in enumerate(examples):
        fact = f"{e['prompt']} {e['target'].strip()}"
        demos.append(Demonstration("copy", fact, e["prompt"], e["target"].strip()))
        if e.get("rephrase"):
            demos.append(Demonstration("update", fact, e["rephrase"], e["target"].strip()))
        if e.get("retain_prompt") and e.get("retain_answer"):
            demos.append(Demonstration("retain", fact, e["retain_prompt"], e["retain_answer"].strip()))
        elif len(examples) > 1:
            other = examples[(i + 1) % len(examples)]
            demos.append(Demonstration("retain", fact, other["prompt"], other["target"].strip()))
    return demos


def involves(demo: Demonstration, request: EditRequest) -> bool:
    """True when a pool demonstration states or asks the edit prompt itself (it would answer the probe)."""
    return demo.prompt == request.prompt or demo.fact.startswith(request.prompt + " ")


def read_pool(path: Path | str) -> list[dict]:
    """Pool examples from a JSONL of {prompt, target, rephrase?} or from EasyEdit's flattened CounterFact (a JSON
    array of {prompt, target_new, rephrase_prompt, locality_prompt, locality_ground_truth}, e.g. the training split
    ``counterfact_train.json``: never an evaluation set)."""
    path = resolve_data_ref(path)
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        examples = []
        for n, e in enumerate(json.loads(text)):
            if not isinstance(e, dict) or not isinstance(e.get("prompt"), str) or not isinstance(e.get("target_new"), str):
                raise ValueError(f"{path}: record {n} must be an object with string 'prompt' and 'target_new'")
            examples.append({"prompt": e["prompt"], "target": e["target_new"], "rephrase": e.get("rephrase_prompt"),
                             "retain_prompt": e.get("locality_prompt"), "retain_answer": e.get("locality_ground_truth")})
        return examples
    examples = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        e = json.loads(line)
        if not isinstance(e, dict) or not isinstance(e.get("prompt"), str) or not isinstance(e.get("target"), str):
            raise ValueError(f"{path}:{n}: each line must be an object with string 'prompt' and 'target'")
        examples.append(e)
    return examples


def render_context(demos: list[Demonstration], request: EditRequest) -> str:
    """Everything the probe is appended to: the demonstrations, then the new fact."""
    return "".join(d.render() for d in demos) + f"New fact: {new_fact(request)}\n"


def rank_demonstrations(query_vec: np.ndarray, demo_vecs: np.ndarray, k: int) -> tuple[list[int], list[float]]:
    """Indices of the k demonstrations most similar to the query, least similar first (paper §3.2), and their scores.

    Vectors are unit-norm, so the dot product is the cosine similarity; ties keep pool order.
    """
    sims = demo_vecs @ query_vec                                   # [n]
    top = np.argsort(-sims, kind="stable")[:k]                     # most similar first
    order = top[::-1]
    return [int(i) for i in order], [float(sims[i]) for i in order]


class IKEEditor(Editor):
    row_batchable = True
    name = "ike"
    modes = ("single",)
    Hparams = IKEHparams

    def __init__(self, hparams=None, embedder=None, **overrides):
        super().__init__(hparams, **overrides)
        self._embedder = embedder          # anything with encode(list[str]) -> unit-norm [n, d]
        self._pool: tuple[list[Demonstration], np.ndarray] | None = None
        self._contexts: dict[tuple, str] = {}

    def _get_embedder(self, device: str = "cpu"):
        if self._embedder is None:
            from editprobe.embeddings import Embedder

            self._embedder = Embedder(self.hparams.embedding_model, device=device)
        return self._embedder

    def demonstrations(self, request: EditRequest, device: str = "cpu") -> tuple[list[Demonstration], list[float]]:
        """The k demonstrations for ``request``, in prompt order, with their similarity to the query."""
        embedder = self._get_embedder(device)

        def embed(texts: list[str]) -> np.ndarray:
            return np.asarray(embedder.encode(texts), dtype=np.float32).reshape(len(texts), -1)

        if self.hparams.pool_path:
            if self._pool is None:  # the pool is embedded once per editor
                demos = pool_demonstrations(read_pool(self.hparams.pool_path))
                self._pool = (demos, embed([d.render().strip() for d in demos]))
            keep = [i for i, d in enumerate(self._pool[0]) if not involves(d, request)]
            candidates, vecs = [self._pool[0][i] for i in keep], self._pool[1][keep]
        else:
            candidates = request_demonstrations(request)
            vecs = embed([d.render().strip() for d in candidates])
        if not candidates or self.hparams.k <= 0:
            return [], []
        query = embed([f"New fact: {new_fact(request)}\nPrompt: {request.prompt}"])[0]
        order, sims = rank_demonstrations(query, vecs, self.hparams.k)
        return [candidates[i] for i in order], sims

    def _context(self, request: EditRequest) -> str:
        key = (request.record_id, request.prompt, request.target)
        if key not in self._contexts:  # wrap_prompt without apply: retrieve now (one context is kept)
            self._contexts = {key: render_context(self.demonstrations(request)[0], request)}
        return self._contexts[key]

    def apply(self, model, tokenizer, requests: list[EditRequest]) -> EditHandle:
        if len(requests) != 1:
            raise ValueError(f"ike edits one fact at a time (mode 'single'); got {len(requests)} requests")
        request = requests[0]
        device = str(next(model.parameters()).device)
        demos, sims = self.demonstrations(request, device)
        self._contexts = {(request.record_id, request.prompt, request.target): render_context(demos, request)}
        return EditHandle(model, [], diagnostics={
            "demonstrations": [{"kind": d.kind, "prompt": d.prompt, "answer": d.answer, "similarity": s}
                               for d, s in zip(demos, sims)],
            "pool": self.hparams.pool_path or "request"})

    def wrap_prompt(self, prompt: str, request: EditRequest) -> str:
        return f"{self._context(request)}Prompt: {prompt}"
