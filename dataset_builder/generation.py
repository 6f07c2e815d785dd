"""The generation steps of the perturbation set, one small function each; prompts live in tasks/prompts/*.yaml.

1. :func:`generate_paraphrases` - six-level paraphrases of the record's question (zsre) or of its
   newquestion (wiki configs), each candidate through its level's gate, failing levels regenerated
   up to ``max_attempts`` times; :func:`import_paraphrases` does the same gating for paraphrases
   written elsewhere (``--paraphrases-from``).
2. :func:`generate_subject_knowledge` - the TARGET model states what it knows about the subject.
3. :func:`generate_newquestions` - a question answerable from that subject_knowledge.
(4. topics live in :mod:`editprobe.dataset_builder.topics`.)

Every step takes records and an :class:`~editprobe.dataset_builder.llm.LLM` and returns per-record outcomes;
nothing here reads flags or the environment.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from editprobe.dataset_builder.gates import GateReport, Scheme, Verdict, contains_subject, gate_paraphrases
from editprobe.dataset_builder.llm import LLM, ChatRequest, ChatResult
from editprobe.resources import tasks_dir

#: temperature of a regeneration: a greedy backend would otherwise repeat the answer that just failed
RETRY_TEMPERATURE = 0.7


def question_sha1(text: str) -> str:
    """The 12-hex-digit fingerprint a paraphrase file stores instead of the text it paraphrases."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


# --------------------------------------------------------------------------- prompts

@dataclass(frozen=True)
class Prompt:
    """A chat prompt template from tasks/prompts/<name>.yaml; ``{field}`` placeholders, ``{{``/``}}`` for braces."""

    name: str
    version: int
    system: str
    user: str
    json: bool
    max_tokens: int
    retry_note: str = ""

    def request(self, *, attempt: int = 1, seed: int = 0, temperature: float | None = None,
                note: str = "", **fields) -> ChatRequest:
        user = self.user.format(**fields)
        if note:
            user += "\n\n" + note
        if attempt > 1:  # sample on regeneration; the attempt number varies the seed (and so the cache key)
            temperature = max(temperature or 0.0, RETRY_TEMPERATURE)
        return ChatRequest((("system", self.system), ("user", user)), json_mode=self.json,
                           temperature=temperature, max_tokens=self.max_tokens,
                           seed=(seed * 1000 + attempt) if attempt > 1 else None)


@functools.lru_cache(maxsize=None)
def load_prompt(name: str, folder=None) -> Prompt:
    """``tasks/prompts/<name>.yaml`` (or ``<folder>/<name>.yaml``) as a :class:`Prompt`."""
    path = (tasks_dir() / "prompts" if folder is None else Path(folder)) / f"{name}.yaml"
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    return Prompt(spec["name"], int(spec["version"]), spec["system"].strip(), spec["user"].strip(),
                  bool(spec.get("json", False)), int(spec["max_tokens"]), spec.get("retry_note", "").strip())


# --------------------------------------------------------------------------- step 2: subject_knowledge

_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")


def clean_statement(text: str) -> str:
    """Collapse whitespace, drop sentences repeated word for word (small greedy models loop), and trim an
    answer cut off by the token limit to its last full sentence (kept whole when it has none)."""
    text = " ".join((text or "").split())
    if text and not _SENTENCE_END.search(text[-1:]):
        ends = [m.end() for m in _SENTENCE_END.finditer(text)]
        if ends:
            text = text[:ends[-1]]
    sentences, seen = [], set()
    for sentence in re.split(r"(?<=[.!?])\s+", text):
        if sentence.casefold() not in seen:
            seen.add(sentence.casefold())
            sentences.append(sentence)
    return " ".join(sentences)


def generate_subject_knowledge(records: list[dict], target: LLM) -> dict[str, str | None]:
    """{record id: what the target model says about the record's subject, or None when it said nothing}."""
    prompt = load_prompt("subject_knowledge")
    results = target.chat_many([prompt.request(subject=r["subject"]) for r in records], desc="subject_knowledge")
    return {r["id"]: (clean_statement(res.text) or None) if res.ok else None for r, res in zip(records, results)}


# --------------------------------------------------------------------------- step 3: newquestion

def check_newquestion(text: str, subject: str) -> str | None:
    """None when ``text`` is a usable newquestion, else why not."""
    if not text:
        return "empty"
    if not contains_subject(text, subject):
        return "subject missing"
    if not text.endswith("?"):
        return "not a question"
    return None


def _answer_field(result: ChatResult, key: str) -> tuple[str | None, str | None]:
    """(value, None) or (None, why) for an answer that should carry one string under ``key``.

    Models without a JSON mode often answer with the bare string: then the first non-empty line is
    the value (the step's own check decides whether it is usable).
    """
    if not result.ok:
        return None, f"LLM call failed ({result.error})"
    try:
        value = result.json().get(key)
    except ValueError:
        lines = [line.strip() for line in (result.text or "").splitlines() if line.strip()]
        if not lines:
            return None, "empty answer"
        value = re.sub(rf'^\W*{re.escape(key)}\W*:\s*', "", lines[0], flags=re.IGNORECASE).strip(' "\'`')
    if not isinstance(value, str) or not value.strip():
        return None, f"no {key!r} string in the answer"
    return " ".join(value.split()), None


def generate_newquestions(items: list[dict], llm: LLM, *, max_attempts: int = 3, seed: int = 0
                          ) -> dict[str, tuple[str | None, str | None]]:
    """{id: (newquestion, None) or (None, reason)} for items ``{id, subject, subject_knowledge}``."""
    prompt = load_prompt("newquestion")
    outcome: dict[str, tuple[str | None, str | None]] = {}
    pending = {it["id"]: it for it in items}
    notes: dict[str, str] = {}
    for attempt in range(1, max_attempts + 1):
        if not pending:
            break
        ids = list(pending)
        requests = [prompt.request(attempt=attempt, seed=seed, subject=pending[i]["subject"],
                                   subject_knowledge=pending[i]["subject_knowledge"],
                                   note=prompt.retry_note.format(failures=notes[i]) if i in notes else "")
                    for i in ids]
        for i, result in zip(ids, llm.chat_many(requests, desc=f"newquestion (attempt {attempt})")):
            text, why = _answer_field(result, "newquestion")
            why = why or check_newquestion(text, pending[i]["subject"])
            if why is None:
                outcome[i] = (text, None)
                del pending[i]
            else:
                notes[i] = why
    for i in pending:
        outcome[i] = (None, f"no valid newquestion after {max_attempts} attempts (last: {notes[i]})")
    return outcome


# --------------------------------------------------------------------------- step 1: paraphrases

@dataclass
class ParaphraseOutcome:
    """Six gated paraphrases, or the reason the record is kept out; ``attempts`` = generation rounds used."""

    paraphrases: list[dict] | None
    attempts: int
    reason: str | None = None
    kind: str | None = None  # the reason without its per-record detail (report counts)


def levels_text(scheme: Scheme) -> str:
    return "\n".join(f"{r.level}. {r.name}: {r.description}" for r in scheme.levels)


_NUMBERED = re.compile(r"^\W*(?:level\s*)?([1-6])\s*[.:)\]-]\s*(.+)$", re.IGNORECASE)


def answer_levels_text(text: str) -> dict[int, str]:
    """``{level: rephrase}`` from an answer as numbered lines ("1. ...", "Level 2: ..."); first occurrence wins."""
    out: dict[int, str] = {}
    for line in (text or "").splitlines():
        m = _NUMBERED.match(line.strip())
        if m and int(m[1]) not in out:
            out[int(m[1])] = m[2].strip().strip('"').strip()
    return out


def answer_levels(obj) -> dict[int, str]:
    """``{level: rephrase}`` from the shapes models answer with: {"1": ..}, {"level_1": ..}, a list of six,
    or any of these under one wrapping key."""
    if isinstance(obj, dict) and len(obj) == 1:
        inner = next(iter(obj.values()))
        if isinstance(inner, (dict, list)):
            obj = inner
    if isinstance(obj, list):
        out = {}
        for i, item in enumerate(obj[:6], start=1):
            if isinstance(item, dict):
                level, text = item.get("level", i), item.get("rephrase") or item.get("question")
            else:
                level, text = i, item
            if isinstance(level, int) and isinstance(text, str):
                out[level] = text
        return out
    out = {}
    if isinstance(obj, dict):
        for key, value in obj.items():
            digits = re.sub(r"\D", "", str(key))
            if digits and isinstance(value, str) and 1 <= int(digits) <= 6:
                out[int(digits)] = " ".join(value.split())
    return out


def _missing(level: int, why: str) -> Verdict:
    return Verdict(level, "", False, [why], {})


def _failure_summary(verdicts: dict[int, Verdict]) -> str:
    return "; ".join(f"level {lvl}: {', '.join(v.reasons)}" for lvl, v in sorted(verdicts.items()))


def generate_paraphrases(items: list[dict], llm: LLM, scheme: Scheme, embedder, report: GateReport, *,
                         max_attempts: int = 3, seed: int = 0) -> dict[str, ParaphraseOutcome]:
    """Six gated paraphrases per item ``{id, subject, question}`` (``question``: the text paraphrased).

    Each round asks for all six levels; a level that passes its gate is kept, the others are asked
    again (with the gate's reasons) up to ``max_attempts`` rounds. Every candidate's verdict goes
    into ``report``.
    """
    prompt = load_prompt("paraphrases")
    levels = levels_text(scheme)
    accepted: dict[str, dict[int, str]] = {it["id"]: {} for it in items}
    failures: dict[str, dict[int, Verdict]] = {}
    pending = {it["id"]: it for it in items}
    outcome: dict[str, ParaphraseOutcome] = {}
    for attempt in range(1, max_attempts + 1):
        if not pending:
            break
        ids = list(pending)
        requests = [prompt.request(attempt=attempt, seed=seed, subject=pending[i]["subject"],
                                   question=pending[i]["question"], levels=levels,
                                   note=prompt.retry_note.format(failures=_failure_summary(failures[i]))
                                   if failures.get(i) else "")
                    for i in ids]
        for i, result in zip(ids, llm.chat_many(requests, desc=f"paraphrases (attempt {attempt})")):
            item = pending[i]
            todo = [lvl for lvl in range(1, 7) if lvl not in accepted[i]]
            if not result.ok:
                failures[i] = {lvl: _missing(lvl, f"LLM call failed ({result.error})") for lvl in todo}
                continue
            try:
                candidates = answer_levels(result.json())
            except ValueError:
                candidates = answer_levels_text(result.text)
            verdicts = _gate_new_levels(scheme, item, accepted[i], {lvl: candidates.get(lvl) for lvl in todo},
                                        embedder)
            report.add(list(verdicts.values()))
            failures[i] = {}
            for lvl, verdict in verdicts.items():
                if verdict.passed:
                    accepted[i][lvl] = verdict.rephrase
                else:
                    failures[i][lvl] = verdict
            if len(accepted[i]) == 6:
                outcome[i] = ParaphraseOutcome([{"level": lvl, "rephrase": accepted[i][lvl]} for lvl in range(1, 7)],
                                               attempt)
                del pending[i]
    for i in pending:
        outcome[i] = ParaphraseOutcome(None, max_attempts, f"paraphrases failed the gates after {max_attempts} "
                                                           f"attempts: {_failure_summary(failures.get(i, {}))}",
                                       "paraphrases failed the gates")
    return outcome


def _gate_new_levels(scheme: Scheme, item: dict, accepted: dict[int, str], candidates: dict[int, str | None],
                     embedder) -> dict[int, Verdict]:
    """Verdicts of the new candidates, gated together with the already accepted levels (duplicate check)."""
    verdicts = {lvl: _missing(lvl, "missing from the answer") for lvl, text in candidates.items() if not text}
    present = {lvl: text for lvl, text in candidates.items() if text}
    if present:
        together = [{"level": lvl, "rephrase": text} for lvl, text in sorted({**accepted, **present}.items())]
        for v in gate_paraphrases(scheme, item["question"], item["subject"], together, embedder):
            if v.level in present:
                verdicts[v.level] = v
    return dict(sorted(verdicts.items()))


def import_paraphrases(items: list[dict], lines: dict[str, dict], scheme: Scheme, embedder, report: GateReport,
                       *, source: str) -> dict[str, ParaphraseOutcome]:
    """Gate paraphrases written elsewhere (``--paraphrases-from``), matched by id and ``question_sha1``.

    A missing line, a fingerprint that does not match the text paraphrased, a malformed level list
    or a failed gate keeps the record out (imported text cannot be regenerated).
    """
    from tqdm.auto import tqdm

    outcome: dict[str, ParaphraseOutcome] = {}
    for item in tqdm(items, desc="gating imported paraphrases", disable=None, leave=False):
        i = item["id"]
        line = lines.get(i)
        if line is None:
            outcome[i] = ParaphraseOutcome(None, 0, f"no line for this record in {source}", "no line in the paraphrase file")
            continue
        expected = question_sha1(item["question"])
        if line.get("question_sha1") != expected:
            outcome[i] = ParaphraseOutcome(None, 0, f"question_sha1 mismatch in {source}: the line says "
                                                    f"{line.get('question_sha1')!r}, the text paraphrased "
                                                    f"hashes to {expected!r}", "question_sha1 mismatch")
            continue
        paraphrases = line.get("paraphrases")
        if (not isinstance(paraphrases, list) or [p.get("level") if isinstance(p, dict) else None
                                                  for p in paraphrases] != [1, 2, 3, 4, 5, 6]
                or not all(isinstance(p.get("rephrase"), str) and p["rephrase"].strip() for p in paraphrases)):
            outcome[i] = ParaphraseOutcome(None, 0, f"malformed paraphrases in {source}: expected six "
                                                    f"{{level, rephrase}} objects, levels 1..6 in order",
                                           "malformed paraphrase line")
            continue
        paraphrases = [{"level": p["level"], "rephrase": p["rephrase"].strip()} for p in paraphrases]
        verdicts = gate_paraphrases(scheme, item["question"], item["subject"], paraphrases, embedder)
        report.add(verdicts)
        failed = {v.level: v for v in verdicts if not v.passed}
        outcome[i] = (ParaphraseOutcome(paraphrases, 0) if not failed else
                      ParaphraseOutcome(None, 0, f"imported paraphrases failed the gates: {_failure_summary(failed)}",
                                        "imported paraphrases failed the gates"))
    return outcome
