"""Scores of the free answers a run recorded (``editprobe run --free-answers N``) on the seed's 0-5 rubric.

A run with free answers holds, per record and per model state (pre, post), greedy answers to the edit query (S1)
and to two neighbourhood queries (S2, S3: the record's first locality prompts). Like every sampled response they
are stored without the dataset's text: the queries and the answer each state should give (S1: the old object
before the edit, the new one after; S2, S3: their own answers) come from the run's dataset records
(:func:`free_queries`, :func:`run_records`). This module joins the two into items, scores the items with an LLM
judge through any OpenAI-compatible chat-completions endpoint, and moves them to and from a CSV for human
annotators. Nothing here imports torch.

Judge scores are cached per item under ``RUN_DIR/judge/llm-<model>.jsonl`` (one line per item, written as soon as
it is scored), so a rerun sends only what is missing; the API key is read from an environment variable at call
time and never written anywhere. Human scores are imported per annotator into ``RUN_DIR/judge/human-<name>.jsonl``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

RUBRIC_VERSION = 1
#: The seed's rubric: what each score means. The judge is shown it verbatim; annotators get it in the CSV's header
#: file (``<csv>.rubric.txt``).
RUBRIC = {
    0: "a fluency problem: the answer is garbled, repeats itself or is not language",
    1: "fluent but irrelevant to the question",
    2: "related to the question but inconsistent with itself or with the question",
    3: "on topic, but a factual error right at the start (the key fact is wrong)",
    4: "on topic and starts right, but a factual error comes later in the answer",
    5: "essentially correct",
}
SLOTS = ("S1", "S2", "S3")
STATES = ("pre", "post")
CSV_FIELDS = ("item", "record_id", "state", "slot", "query", "reference", "answer", "score", "note")


class JudgeError(RuntimeError):
    """A judge reply that could not be obtained or read."""


@dataclass(frozen=True)
class Item:
    """One free answer to score."""

    record_id: str
    state: str          # "pre" | "post"
    slot: str           # "S1" edit query | "S2", "S3" neighbourhood queries
    query: str
    reference: str      # the answer this state should give
    answer: str         # what the model said (greedy)

    @property
    def id(self) -> str:
        return f"{self.record_id}:{self.state}:{self.slot}"


def rubric_text() -> str:
    return "\n".join(f"{k}: {v}" for k, v in RUBRIC.items())


# --------------------------------------------------------------------------- items of a run

def free_queries(record: dict, state: str) -> list[tuple[str, str, str]]:
    """``(slot, query, reference)`` of the judged free answers: S1 the edit prompt (reference: the old object
    before the edit, the new one after), S2 and S3 the record's first two locality prompts (their own answers)."""
    out = [("S1", record["prompt"], record["answer"] if state == "pre" else record["alt"])]
    for slot, probe in zip(("S2", "S3"), [p for p in record["locality"] if p.get("answers")]):
        out.append((slot, probe["prompt"], probe["answers"][0]))
    return out


def run_records(run_dir: Path, dataset_path: str | None = None) -> dict[str, dict]:
    """The records the run scored, by id, read from the dataset its results file names (path, config, split,
    revision; ``dataset_path`` overrides the path); refused when that dataset's fingerprint is not the run's."""
    from datasets import load_dataset

    path = Path(run_dir) / "results.json"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file (the judge reads the run's dataset from it)")
    ds_info = json.loads(path.read_text())["provenance"]["dataset"]
    where = dataset_path or ds_info["path"]
    ds = load_dataset(where, ds_info["config"], split=ds_info["split"], revision=ds_info.get("revision"))
    if ds_info.get("fingerprint") and ds._fingerprint != ds_info["fingerprint"]:
        raise ValueError(f"{path}: field 'provenance.dataset.fingerprint': the dataset at {where} "
                         f"({ds._fingerprint}) is not the one this run scored ({ds_info['fingerprint']})")
    return {row["id"]: dict(row) for row in ds}


def scored_lines(run_dir: Path) -> tuple[Path, list[dict]]:
    """The samples file of a run folder (``samples.jsonl``, or a filed submission's ``samples.jsonl.gz``) and its
    scored record lines."""
    from editprobe.benchmark.storage import parse_lines
    from editprobe.leaderboard.submissions import SAMPLES, read_samples_bytes

    folder = Path(run_dir)
    path = next((folder / n for n in ("samples.jsonl", SAMPLES) if (folder / n).exists()), None)
    if path is None:
        raise FileNotFoundError(f"{folder}: holds neither samples.jsonl nor {SAMPLES}")
    lines = parse_lines(read_samples_bytes(path).decode("utf-8"), path)
    return path, [x for x in lines if x.get("kind", "record") == "record" and x.get("status") == "ok"]


def load_items(run_dir: Path, records: dict[str, dict] | None = None) -> list[Item]:
    """Every free answer of the run's scored records, record by record, pre before post, S1 to S3, with its
    query and reference from ``records`` (default: :func:`run_records`). A run without free answers gets one
    error saying how to record them."""
    path, lines = scored_lines(run_dir)
    if not any(line[state].get("free_answers") for line in lines for state in STATES):
        raise ValueError(f"{path}: none of its {len(lines)} scored records has free answers; record them with "
                         "`editprobe run ... --free-answers 48`")
    records = run_records(run_dir) if records is None else records
    items = []
    for line in lines:
        record = records.get(line["id"])
        if record is None:
            raise ValueError(f"{path}: record {line['id']}: not in the run's dataset")
        for state in STATES:
            queries = {slot: (q, ref) for slot, q, ref in free_queries(record, state)}
            for entry in line[state].get("free_answers") or []:
                if entry.get("slot") not in queries or "answer" not in entry:
                    raise ValueError(f"{path}: record {line['id']}: field '{state}.free_answers': entry "
                                     f"{entry!r} is not a slot of this record with an answer")
                query, reference = queries[entry["slot"]]
                items.append(Item(line["id"], state, entry["slot"], query, reference, entry["answer"]))
    return items


# --------------------------------------------------------------------------- the LLM judge

def judge_messages(item: Item) -> list[dict]:
    """The chat the judge sees: the rubric as the system message, the question, expected and given answers."""
    system = ("You grade answers given by a small language model. Score the model's answer with one integer "
              "from 0 to 5 on this rubric:\n" + rubric_text() + "\nThe expected answer is the fact the model "
              "should state; judge the answer against it and against the question. Reply with JSON only: "
              '{"score": <0-5>, "reason": "<a few words>"}')
    user = f"Question: {item.query}\nExpected answer: {item.reference}\nModel's answer: {item.answer}"
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def parse_score(text: str) -> int:
    """The rubric score in a judge's reply: the ``score`` of a JSON object, else a lone leading integer 0-5."""
    match = re.search(r"\{.*\}", text, re.S)
    if match:
        try:
            value = json.loads(match.group(0)).get("score")
            if isinstance(value, (int, float)) and float(value).is_integer() and 0 <= value <= 5:
                return int(value)
        except (json.JSONDecodeError, AttributeError):
            pass
    match = re.match(r"\s*(?:score\s*[:=]?\s*)?([0-5])(?!\d)", text, re.I)
    if match:
        return int(match.group(1))
    raise JudgeError(f"no rubric score (an integer 0-5) in the judge's reply {text[:200]!r}")


class ChatClient:
    """POST ``{base_url}/chat/completions`` (the OpenAI wire format) with the key from ``api_key_env``.

    Temperature 0; retries with exponential back-off on connection errors, 429 and 5xx; other HTTP errors raise
    at once. The key is read from the environment on every call and kept nowhere else.
    """

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", timeout: float = 60.0,
                 retries: int = 4, backoff: float = 1.0, max_tokens: int = 64):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.api_key_env = model, api_key_env
        self.timeout, self.retries, self.backoff, self.max_tokens = timeout, retries, backoff, max_tokens
        self.requests = 0

    def complete(self, messages: list[dict]) -> str:
        body = json.dumps({"model": self.model, "messages": messages, "temperature": 0,
                           "max_tokens": self.max_tokens}).encode()
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        last = None
        for attempt in range(self.retries + 1):
            self.requests += 1
            try:
                with urllib.request.urlopen(urllib.request.Request(self.url, body, headers), timeout=self.timeout) as r:
                    doc = json.loads(r.read().decode())
                return doc["choices"][0]["message"]["content"]
            except urllib.error.HTTPError as exc:
                if exc.code != 429 and exc.code < 500:
                    raise JudgeError(f"{self.url}: HTTP {exc.code} {exc.reason}") from None
                last = f"HTTP {exc.code}"
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            except (KeyError, IndexError, TypeError, json.JSONDecodeError):
                raise JudgeError(f"{self.url}: the reply is not a chat completion") from None
            if attempt < self.retries:
                time.sleep(self.backoff * 2 ** attempt)
        raise JudgeError(f"{self.url}: no answer after {self.retries + 1} tries ({last})")


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "judge"


def item_key(item: Item, model: str) -> str:
    """What a cached score depends on: the judge model, the rubric version and the exact prompt."""
    payload = json.dumps({"model": model, "rubric": RUBRIC_VERSION, "messages": judge_messages(item)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def llm_scores_path(run_dir: Path, model: str) -> Path:
    return Path(run_dir) / "judge" / f"llm-{_slug(model)}.jsonl"


def _read_lines(path: Path) -> list[dict]:
    """The lines of a scores file; a torn last line (killed mid-write) is dropped, so that item is judged again."""
    from editprobe.benchmark.storage import read_samples

    return read_samples(path)


def judge_run(run_dir: Path, client: ChatClient, base_url: str | None = None, progress=None,
              records: dict | None = None) -> dict:
    """Score every item of the run that the cache lacks; returns ``{"scored", "cached", "failed", "path"}``.
    Items with the same prompt (an answer that did not change between the states) share one judgement.

    Each score is appended (and flushed) as soon as it comes back, so a killed run resumes where it stopped. An
    item whose reply cannot be read is reported and left out (a rerun tries it again).
    """
    items = load_items(run_dir, records)
    path = llm_scores_path(run_dir, client.model)
    path.parent.mkdir(parents=True, exist_ok=True)
    done = {x["key"] for x in _read_lines(path)}
    scored = cached = 0
    failed: list[str] = []
    with open(path, "a", encoding="utf-8") as fh:
        for item in items:
            key = item_key(item, client.model)
            if key in done:
                cached += 1
                continue
            try:
                reply = client.complete(judge_messages(item))
                score = parse_score(reply)
            except JudgeError as exc:
                failed.append(f"{item.id}: {exc}")
                continue
            fh.write(json.dumps({"key": key, "item": item.id, "score": score, "reply": reply,
                                 "judge": {"model": client.model, "endpoint": base_url or client.url,
                                           "rubric_version": RUBRIC_VERSION}}, ensure_ascii=False) + "\n")
            fh.flush()
            done.add(key)
            scored += 1
            if progress:
                progress(scored + cached, len(items))
    return {"scored": scored, "cached": cached, "failed": failed, "path": str(path), "items": len(items)}


# --------------------------------------------------------------------------- human annotation

def export_csv(run_dir: Path, out: Path, records: dict | None = None) -> int:
    """A CSV for annotators (score and note left empty) and the rubric beside it; returns the item count."""
    items = load_items(run_dir, records)
    out = Path(out)
    with open(out, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        w.writeheader()
        for it in items:
            w.writerow({"item": it.id, "record_id": it.record_id, "state": it.state, "slot": it.slot,
                        "query": it.query, "reference": it.reference, "answer": it.answer, "score": "", "note": ""})
    out.with_suffix(".rubric.txt").write_text(
        "Score each answer with one integer from 0 to 5 against the question and the expected answer:\n"
        + rubric_text() + "\n", encoding="utf-8")
    return len(items)


def human_scores_path(run_dir: Path, annotator: str) -> Path:
    return Path(run_dir) / "judge" / f"human-{_slug(annotator)}.jsonl"


def import_csv(run_dir: Path, path: Path, annotator: str, who: str, records: dict | None = None) -> int:
    """Read an annotated CSV into ``judge/human-<annotator>.jsonl``; every row is checked first (item known,
    answer unchanged, score an integer 0-5) and the first bad one is named with its file and row. ``who`` says
    who the annotator is (written with every score). Rows left unscored are skipped. Returns the scores read."""
    items = {it.id: it for it in load_items(run_dir, records)}
    rows = []
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [f for f in ("item", "answer", "score") if f not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: header lacks {', '.join(missing)}")
        for n, row in enumerate(reader, 2):
            if not (row.get("score") or "").strip():
                continue
            item = items.get(row["item"])
            if item is None:
                raise ValueError(f"{path}: row {n}: field 'item': {row['item']!r} is not an item of {run_dir}")
            if row["answer"] != item.answer:
                raise ValueError(f"{path}: row {n}, item {item.id}: field 'answer' differs from the run's answer")
            text = row["score"].strip()
            if not re.fullmatch(r"[0-5]", text):
                raise ValueError(f"{path}: row {n}, item {item.id}: field 'score': {text!r} is not an integer 0-5")
            rows.append({"item": item.id, "score": int(text), "note": row.get("note") or "",
                         "annotator": annotator, "who": who, "rubric_version": RUBRIC_VERSION})
    if not rows:
        raise ValueError(f"{path}: no row carries a score")
    out = human_scores_path(run_dir, annotator)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return len(rows)


def read_scores(run_dir: Path, source: str, records: dict | None = None) -> dict[str, float]:
    """Scores by item id from ``source``: ``llm:<model>``, ``human:<name>``, or ``human`` (the mean over every
    annotator of the item)."""
    run_dir = Path(run_dir)
    kind, _, name = source.partition(":")
    if kind == "llm" and name:
        cached = {x["key"]: float(x["score"]) for x in _read_lines(llm_scores_path(run_dir, name))}
        keyed = ((it.id, item_key(it, name)) for it in load_items(run_dir, records))
        return {item: cached[key] for item, key in keyed if key in cached}   # same prompt, same score
    if kind == "human":
        paths = [human_scores_path(run_dir, name)] if name else sorted((run_dir / "judge").glob("human-*.jsonl"))
        per_item: dict[str, list[float]] = {}
        for p in paths:
            for x in _read_lines(p):
                per_item.setdefault(x["item"], []).append(float(x["score"]))
        return {k: sum(v) / len(v) for k, v in per_item.items()}
    raise ValueError(f"unknown score source {source!r}: use llm:<model>, human or human:<annotator>")


# --------------------------------------------------------------------------- agreement

def _ranks(xs: list[float]) -> list[float]:
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    ranks = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1            # ties share their mean rank
        i = j + 1
    return ranks


def pearson(xs: list[float], ys: list[float]) -> float:
    n = len(xs)
    if n < 2:
        return float("nan")
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else float("nan")


def spearman(xs: list[float], ys: list[float]) -> float:
    return pearson(_ranks(xs), _ranks(ys))


def weighted_kappa(a: list[int], b: list[int], categories: int = 6) -> float:
    """Cohen's kappa with quadratic weights: 1 - sum w O / sum w E, w_ij = (i - j)^2 / (c - 1)^2."""
    n = len(a)
    if n == 0:
        return float("nan")
    obs = [[0.0] * categories for _ in range(categories)]
    for x, y in zip(a, b):
        obs[x][y] += 1 / n
    pa = [sum(row) for row in obs]
    pb = [sum(obs[i][j] for i in range(categories)) for j in range(categories)]
    w = lambda i, j: (i - j) ** 2 / (categories - 1) ** 2  # noqa: E731
    o = sum(w(i, j) * obs[i][j] for i in range(categories) for j in range(categories))
    e = sum(w(i, j) * pa[i] * pb[j] for i in range(categories) for j in range(categories))
    return 1 - o / e if e > 0 else float("nan")


def agreement(first: dict[str, float], second: dict[str, float]) -> dict:
    """How two score sets agree on the items both scored: exact and within-one agreement, quadratic-weighted
    kappa (integer scores), Spearman's rho."""
    common = sorted(set(first) & set(second))
    a = [first[k] for k in common]
    b = [second[k] for k in common]
    out = {"items": len(common),
           "exact": sum(x == y for x, y in zip(a, b)) / len(common) if common else float("nan"),
           "within_one": sum(abs(x - y) <= 1 for x, y in zip(a, b)) / len(common) if common else float("nan"),
           "spearman": spearman(a, b)}
    if all(float(x).is_integer() for x in a + b):
        out["weighted_kappa"] = weighted_kappa([int(x) for x in a], [int(x) for x in b])
    return out
