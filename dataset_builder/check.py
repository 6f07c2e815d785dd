"""Check a hand-written paraphrase file against its source records before a build: ``editprobe check-paraphrases``.

A paraphrase file (JSON Lines, one line per record: ``id``, ``question_sha1``, six ``paraphrases``, and for
the wiki configs ``newquestion``; optional ``topic``; or ``{"id", "left_out": REASON}`` for a record the writer
could not paraphrase, which the build reports with that reason) is what people write when no strong generator model
is at hand. The build keeps a record out when any of its lines fails; this check says which line failed
and by how much, so the writer can fix it first. It runs the build's own gates (same scheme file, same
metrics, same embedder) and makes no model call besides the sentence embedder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from editprobe.dataset_builder.gates import gate_paraphrases, load_scheme
from editprobe.dataset_builder.generation import check_newquestion, question_sha1


@dataclass
class LineProblem:
    """What is wrong with one line of a paraphrase file (``level`` 0: the line as a whole)."""

    id: str
    level: int
    why: str
    text: str = ""
    metrics: dict = field(default_factory=dict)

    def format(self) -> str:
        where = f"L{self.level}" if self.level else "line"
        values = " ".join(f"{k}={v:.3f}" for k, v in self.metrics.items())
        return f"{self.id} {where}: {self.why}" + (f" [{values}]" if values else "") + (
            f" | {self.text}" if self.text else "")


@dataclass
class CheckResult:
    checked: int = 0
    passed: int = 0
    left_out: int = 0
    problems: list[LineProblem] = field(default_factory=list)
    unknown_ids: list[str] = field(default_factory=list)

    @property
    def failed_ids(self) -> list[str]:
        return sorted({p.id for p in self.problems})


def check_paraphrase_file(path: Path | str, config: str, source: Path | str, *, scheme: str = "llama2",
                          embedder=None, topics: tuple[str, ...] | None = None) -> CheckResult:
    """Gate every line of ``path`` against the records of ``source`` (a file feeding ``config``)."""
    from editprobe.dataset_builder.build import read_paraphrase_file
    from editprobe.dataset_builder.sources import convert_file
    from editprobe.formats import WIKI_CONFIGS, load_topics

    rules = load_scheme(scheme)
    topics = topics if topics is not None else load_topics()
    lines = read_paraphrase_file(Path(path))
    records = {r["id"]: r for r in convert_file(source).records}
    if embedder is None:
        from editprobe.embeddings import Embedder

        embedder = Embedder()
    result = CheckResult()
    wiki = config in WIKI_CONFIGS
    for rid, line in lines.items():
        record = records.get(rid)
        if record is None:
            result.unknown_ids.append(rid)
            continue
        if isinstance(line.get("left_out"), str):  # a record the writer left out, with the reason
            result.left_out += 1
            continue
        result.checked += 1
        before = len(result.problems)
        if wiki:
            original = " ".join(str(line.get("newquestion") or "").split())
            why = check_newquestion(original, record["subject"])
            if why:
                result.problems.append(LineProblem(rid, 0, f"newquestion {why}", original))
                continue
        else:
            original = record["question"]
        if line.get("question_sha1") != question_sha1(original):
            result.problems.append(LineProblem(rid, 0, f"question_sha1 should be {question_sha1(original)}"))
        if "topic" in line and line["topic"] not in topics:
            result.problems.append(LineProblem(rid, 0, f"unknown topic {line['topic']!r}"))
        paraphrases = line.get("paraphrases")
        if (not isinstance(paraphrases, list) or [p.get("level") if isinstance(p, dict) else None
                                                  for p in paraphrases] != [1, 2, 3, 4, 5, 6]
                or not all(isinstance(p.get("rephrase"), str) and p["rephrase"].strip() for p in paraphrases)):
            result.problems.append(LineProblem(rid, 0, "expected six {level, rephrase} objects, levels 1..6"))
            continue
        items = [{"level": p["level"], "rephrase": p["rephrase"].strip()} for p in paraphrases]
        for v in gate_paraphrases(rules, original, record["subject"], items, embedder):
            if not v.passed:
                result.problems.append(LineProblem(rid, v.level, "; ".join(v.reasons), v.rephrase, v.metrics))
        if len(result.problems) == before:
            result.passed += 1
    return result
