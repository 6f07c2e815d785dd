"""Step 4: a record's topic, one of the 15 categories of tasks/topics.yaml.

Two classifiers, both reading the record text ``"<subject>: <question>"``:

* :func:`classify_with_llm` - the LLM backend picks a name from the list (tasks/prompts/topic.yaml);
  an answer that is not one of the names is asked again up to ``max_attempts`` times.
* :class:`EmbeddingTopicClassifier` - offline zero-shot: the category whose ``"<name>: <description>"``
  MiniLM embedding is closest (cosine) to the record text's.

:func:`agreement` compares the two where both ran. A hand-checked topic (from a paraphrase file) wins
over both; the build report counts how often it differed from the classifier.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from editprobe.dataset_builder.generation import _answer_field, load_prompt
from editprobe.dataset_builder.llm import LLM
from editprobe.formats import load_topic_descriptions, load_topics

METHODS = ("llm", "embedding", "both")


def record_text(record: dict) -> str:
    return f"{record['subject']}: {record['question']}"


def normalise_topic(label: str | None) -> str | None:
    """The exact category name for a label that matches one up to case, spacing and surrounding punctuation."""
    if not isinstance(label, str):
        return None
    wanted = " ".join(label.strip(" .\"'").split()).casefold()
    for name in load_topics():
        if name.casefold() == wanted:
            return name
    return None


class EmbeddingTopicClassifier:
    """Zero-shot topic by cosine similarity to the category descriptions (no training, no network)."""

    name = "embedding zero-shot"

    def __init__(self, embedder):
        self.embedder = embedder
        self.names = [name for name, _ in load_topic_descriptions()]
        # (15, d) unit rows
        self.label_vectors = embedder.encode([f"{name}: {desc}" for name, desc in load_topic_descriptions()])

    @property
    def label(self) -> str:
        return f"{self.name}:{getattr(self.embedder, 'name', 'MiniLM')}"

    def classify(self, records: list[dict]) -> dict[str, str]:
        if not records:
            return {}
        vectors = self.embedder.encode([record_text(r) for r in records])  # (n, d) unit rows
        best = np.argmax(vectors @ self.label_vectors.T, axis=1)          # (n,)
        return {r["id"]: self.names[int(b)] for r, b in zip(records, best)}


def classify_with_llm(records: list[dict], llm: LLM, *, max_attempts: int = 3, seed: int = 0
                      ) -> dict[str, str | None]:
    """{id: category name, or None when no valid name came back in ``max_attempts`` attempts}."""
    prompt = load_prompt("topic")
    categories = "\n".join(f"- {name}: {desc}" for name, desc in load_topic_descriptions())
    out: dict[str, str | None] = {}
    pending = {r["id"]: r for r in records}
    notes: dict[str, str] = {}
    for attempt in range(1, max_attempts + 1):
        if not pending:
            break
        ids = list(pending)
        requests = [prompt.request(attempt=attempt, seed=seed, categories=categories,
                                   subject=pending[i]["subject"], question=pending[i]["question"],
                                   note=prompt.retry_note.format(failures=notes[i]) if i in notes else "")
                    for i in ids]
        for i, result in zip(ids, llm.chat_many(requests, desc=f"topics (attempt {attempt})")):
            label, why = _answer_field(result, "topic")
            name = normalise_topic(label)
            if name is not None:
                out[i] = name
                del pending[i]
            else:
                notes[i] = why or f"{label!r} is not a category name"
    for i in pending:
        out[i] = None
    return out


def agreement(first: dict[str, str | None], second: dict[str, str | None]) -> dict:
    """How often two labelings of the same records agree, and the most frequent disagreements."""
    both = [i for i in first if first[i] is not None and second.get(i) is not None]
    same = sum(first[i] == second[i] for i in both)
    pairs = Counter(f"{first[i]} / {second[i]}" for i in both if first[i] != second[i])
    return {"compared": len(both), "agree": same, "rate": round(same / len(both), 4) if both else None,
            "disagreements": dict(pairs.most_common(10))}
