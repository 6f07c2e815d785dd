"""Per-level paraphrase quality gates: deterministic checks declared in ``tasks/schemes/<scheme>.yaml``.

Three measurements per (original, paraphrase) pair:

* ``levenshtein`` - character edit distance divided by the original's length (rapidfuzz);
* ``jaccard``     - Jaccard index of the two word sets (lower-cased ``\\w+`` tokens);
* ``similarity``  - cosine similarity of the two sentences' MiniLM embeddings.

Each level of a scheme bounds some of them; on top, every paraphrase must keep the subject (entity
names survive paraphrasing), differ from the original, and differ from the record's other levels.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from rapidfuzz.distance import Levenshtein

from editprobe.resources import files_with_suffix, stem, tasks_dir

METRICS = ("levenshtein", "jaccard", "similarity")
_WORD = re.compile(r"\w+")


def levenshtein_ratio(original: str, paraphrase: str) -> float:
    """Character-level edit distance normalised by the original's length."""
    return Levenshtein.distance(original, paraphrase) / max(len(original), 1)


def word_jaccard(a: str, b: str) -> float:
    """|A ∩ B| / |A ∪ B| over the lower-cased word sets of a and b."""
    wa, wb = set(_WORD.findall(a.lower())), set(_WORD.findall(b.lower()))
    union = wa | wb
    return len(wa & wb) / len(union) if union else 1.0


@dataclass(frozen=True)
class Bound:
    metric: str
    low: float | None
    high: float | None
    low_inclusive: bool
    high_inclusive: bool

    def failure(self, value: float) -> str | None:
        """None when value is inside the bound, else a short reason."""
        if self.low is not None and (value < self.low or (value == self.low and not self.low_inclusive)):
            return f"{self.metric} {value:.3f} {'<' if self.low_inclusive else '<='} {self.low}"
        if self.high is not None and (value > self.high or (value == self.high and not self.high_inclusive)):
            return f"{self.metric} {value:.3f} {'>' if self.high_inclusive else '>='} {self.high}"
        return None


@dataclass(frozen=True)
class LevelRule:
    level: int
    name: str
    description: str
    bounds: tuple[Bound, ...]


@dataclass(frozen=True)
class Scheme:
    name: str
    description: str
    levels: tuple[LevelRule, ...]

    def rule(self, level: int) -> LevelRule:
        return self.levels[level - 1]


def available_schemes() -> list[str]:
    """The shipped six-level schemes (``tasks/schemes/*.yaml``) by name."""
    return [stem(f) for f in files_with_suffix(tasks_dir() / "schemes", ".yaml")]


def load_scheme(name_or_path: str | Path) -> Scheme:
    """A scheme by name (``llama2``, ``llama3``: files under tasks/schemes/) or by YAML path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = tasks_dir() / "schemes" / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown paraphrase scheme {str(name_or_path)!r} (known: {', '.join(available_schemes())})")
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    levels = []
    for item in spec["levels"]:
        inclusive, exclusive = set(item.get("inclusive", [])), set(item.get("exclusive", []))
        bounds = []
        for metric in METRICS:
            low, high = item.get(f"min_{metric}"), item.get(f"max_{metric}")
            if low is not None or high is not None:
                bounds.append(Bound(metric, low, high, f"min_{metric}" in inclusive,
                                    f"max_{metric}" not in exclusive))
        levels.append(LevelRule(item["level"], item["name"], item["description"], tuple(bounds)))
    if [r.level for r in levels] != [1, 2, 3, 4, 5, 6]:
        raise ValueError(f"{path}: a scheme declares levels 1..6, in order")
    return Scheme(spec["name"], spec["description"], tuple(levels))


@dataclass
class Verdict:
    level: int
    rephrase: str
    passed: bool
    reasons: list[str]
    metrics: dict[str, float]


def contains_subject(text: str, subject: str) -> bool:
    """The subject appears in ``text`` as written, ignoring case and the length of whitespace runs (a few source
    subjects carry double spaces, which a normalised question would otherwise never match)."""
    return " ".join(subject.split()).casefold() in " ".join(text.split()).casefold()


def check_paraphrase(rule: LevelRule, original: str, paraphrase: str, subject: str | None,
                     similarity: float) -> Verdict:
    """Verdict of one paraphrase against its level's rule; ``similarity`` is computed by the caller (batched)."""
    metrics = {"levenshtein": levenshtein_ratio(original, paraphrase),
               "jaccard": word_jaccard(original, paraphrase),
               "similarity": similarity}
    reasons = []
    if not paraphrase.strip():
        reasons.append("empty")
    if paraphrase.strip() == original.strip():
        reasons.append("identical to the original")
    if subject and not contains_subject(paraphrase, subject):
        reasons.append("subject missing")
    for bound in rule.bounds:
        if (why := bound.failure(metrics[bound.metric])) is not None:
            reasons.append(why)
    return Verdict(rule.level, paraphrase, not reasons, reasons, metrics)


def gate_paraphrases(scheme: Scheme, original: str, subject: str | None, paraphrases: list[dict],
                     embedder) -> list[Verdict]:
    """Check ``[{level, rephrase}, ...]`` against the scheme; one embedding call for the whole set."""
    texts = [p["rephrase"] for p in paraphrases]
    vectors = embedder.encode([original, *texts])
    sims = vectors[1:] @ vectors[0]
    verdicts = [check_paraphrase(scheme.rule(p["level"]), original, p["rephrase"], subject, float(s))
                for p, s in zip(paraphrases, sims)]
    seen: dict[str, int] = {}
    for v in verdicts:
        key = v.rephrase.strip().casefold()
        if key in seen:
            v.reasons.append(f"same text as level {seen[key]}")
            v.passed = False
        else:
            seen[key] = v.level
    return verdicts


@dataclass
class GateReport:
    """Per level: how many paraphrases passed, and why the others failed."""

    scheme: str
    passed: Counter = field(default_factory=Counter)
    failed: Counter = field(default_factory=Counter)
    reasons: dict[int, Counter] = field(default_factory=lambda: defaultdict(Counter))
    #: level -> metric -> values of the paraphrases that passed (the card's distributions; "words": length)
    values: dict[int, dict[str, list[float]]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(list)))

    def add(self, verdicts: list[Verdict]) -> None:
        for v in verdicts:
            if v.passed:
                self.passed[v.level] += 1
                for metric, value in v.metrics.items():
                    self.values[v.level][metric].append(value)
                self.values[v.level]["words"].append(float(len(v.rephrase.split())))
            else:
                self.failed[v.level] += 1
                for r in v.reasons:
                    # group "levenshtein 0.031 < 0.1" as "levenshtein < 0.1"
                    self.reasons[v.level][re.sub(r" \d\.\d{3}", "", r)] += 1

    def as_dict(self) -> dict:
        return {str(level): {"passed": self.passed[level], "failed": self.failed[level],
                             "reasons": dict(self.reasons[level]),
                             "passed_distribution": {m: summarise(v) for m, v in self.values[level].items()}}
                for level in range(1, 7)}

    def format(self) -> str:
        lines = [f"gate report (scheme {self.scheme}):"]
        for level in range(1, 7):
            total = self.passed[level] + self.failed[level]
            why = "; ".join(f"{r} x{n}" for r, n in self.reasons[level].most_common())
            lines.append(f"  L{level}: {self.passed[level]}/{total} passed" + (f"  ({why})" if why else ""))
        return "\n".join(lines)


def summarise(values: list[float]) -> dict[str, float]:
    """Mean and the 10th / 50th / 90th percentiles (linear interpolation) of a list of values."""
    if not values:
        return {}
    ordered = sorted(values)

    def quantile(q: float) -> float:
        pos = q * (len(ordered) - 1)
        lo = int(pos)
        hi = min(lo + 1, len(ordered) - 1)
        return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)

    return {"mean": round(sum(ordered) / len(ordered), 4), "p10": round(quantile(0.1), 4),
            "p50": round(quantile(0.5), 4), "p90": round(quantile(0.9), 4)}
