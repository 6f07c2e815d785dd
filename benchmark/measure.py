"""Measuring one model state on one record: sampled responses, the statistics the task's estimators need, their
scores, and the teacher-forced probes (Edit Success, portability, locality)."""

from __future__ import annotations

import contextlib

from editprobe.benchmark import metrics as M
from editprobe.benchmark.sampling import SAMPLER_VERSION
from editprobe.benchmark.tasks import Task
from editprobe.benchmark.uncertainty import build_estimator, level_uncertainty

#: Per-record statistics the runner can compute for an estimator (its ``needs``): the sampled responses ([M][K]
#: strings), their embeddings ((M, K, d)), the embeddings of the M paraphrased questions ((M, d)).
STATISTICS = ("responses", "embeddings", "question_embeddings")
#: The estimators whose results every results file holds (the leaderboard's columns).
REQUIRED_ESTIMATORS = ("U", "U_alea", "U_epis")


def task_estimators(task: Task) -> dict:
    """The task's estimators by result key, built and checked (names, brackets, needs) before any model loads.

    A bare U / U_alea / U_epis uses the task's ``uncertainty.distance``; the key is the name as the task writes it.
    """
    out = {}
    for key in task.estimators:
        try:
            est = build_estimator(key if "[" in key or key not in REQUIRED_ESTIMATORS
                                  else f"{key}[{task.uncertainty.distance}]")
        except (ValueError, KeyError) as exc:
            raise ValueError(f"{task.source}: field 'estimators': {exc}") from None
        unknown = [n for n in est.needs if n not in STATISTICS]
        if unknown:
            raise ValueError(f"{task.source}: field 'estimators': {key} needs {', '.join(unknown)}, which this runner "
                             f"does not compute (it computes: {', '.join(STATISTICS)})")
        out[key] = est
    missing = [k for k in REQUIRED_ESTIMATORS if k not in out]
    if missing:
        raise ValueError(f"{task.source}: field 'estimators': must include {', '.join(REQUIRED_ESTIMATORS)} "
                         f"(every results file reports them); missing {', '.join(missing)}")
    return out


def paraphrases(record: dict, task: Task) -> tuple[list[str], list[int]]:
    levels = list(task.uncertainty.levels)
    by_level = {g["level"]: g["rephrase"] for g in record["generated_questions"]}
    return [by_level[lvl] for lvl in levels], levels


def statistics(responses: list[list[str]], questions: list[str], needs: set[str], embedder) -> dict:
    """The union of what the estimators need, each computed once."""
    stats: dict = {"responses": responses}
    m, k = len(responses), len(responses[0])
    if "embeddings" in needs:
        stats["embeddings"] = embedder.encode([r for row in responses for r in row]).reshape(m, k, -1)
    if "question_embeddings" in needs:
        stats["question_embeddings"] = embedder.encode(questions)
    return stats


def measure(model, tokenizer, record: dict, task: Task, embedder, editor=None, request=None,
            estimators: dict | None = None, engine: str = "decode") -> dict:
    """Sampled responses, each estimator's score, and the teacher-forced probes in the model's current state.
    With an editor (the post-edit pass) the prompts are the editor's and so is the sampling seed. ``engine``: the
    sampling engine (``editprobe.benchmark.sampling.ENGINES``; both draw the same samples)."""
    return measure_many(model, tokenizer, [record], task, embedder, editor, [request], estimators, engine=engine)[0]


def measure_many(model, tokenizer, records: list[dict], task: Task, embedder, editor=None, requests=None,
                 estimators: dict | None = None, deltas=None, engine: str = "decode") -> list[dict]:
    """``measure`` for several records at once: their responses are sampled in one batch (each row with its own
    seed), then each record's statistics and probes. ``deltas`` (a :class:`editprobe.benchmark.multiedit.RowDeltas`
    over the same records, in order) gives each record's rows its own edit."""
    from editprobe.benchmark.sampling import sample_many

    estimators = estimators or task_estimators(task)
    requests = requests or [None] * len(records)
    wraps = [(lambda p, r=r: editor.wrap_prompt(p, r)) if editor is not None else (lambda p: p) for r in requests]
    seed = editor.sampling_seed(task.seed) if editor is not None else task.seed
    groups, questions = [], []
    for record, wrap in zip(records, wraps):
        qs, levels = paraphrases(record, task)
        questions.append(qs)
        groups.append(([wrap(q) for q in qs], record["id"], levels, seed))
    sampled = sample_many(model, tokenizer, groups, task.uncertainty, engine=engine,
                          active=deltas.active if deltas is not None else None)
    out = []
    for b, (record, wrap, qs, responses) in enumerate(zip(records, wraps, questions, sampled)):
        with deltas.only(b) if deltas is not None else contextlib.nullcontext():
            out.append(_finish(model, tokenizer, record, task, embedder, wrap, qs, responses, estimators))
            if task.free_answers:
                out[-1]["free_answers"] = free_answers(model, tokenizer, record, task, wrap,
                                                       "post" if editor is not None else "pre")
    return out


def free_answers(model, tokenizer, record: dict, task: Task, wrap, state: str) -> list[dict]:
    """Greedy answers (up to ``task.free_answers`` new tokens) to ``editprobe.benchmark.judge.free_queries``,
    prompted as the sampled responses are (the editor's wrapping, the chat template with the task's system
    message). Stored as slot and answer only, like every response: the queries are the dataset's."""
    from editprobe.benchmark.judge import free_queries
    from editprobe.benchmark.sampling import greedy_answers

    queries = free_queries(record, state)
    answers = greedy_answers(model, tokenizer, [wrap(q) for _, q, _ in queries], task.uncertainty, task.free_answers)
    return [{"slot": slot, "answer": a} for (slot, _, _), a in zip(queries, answers)]   # texts: from the dataset


def _finish(model, tokenizer, record, task, embedder, wrap, questions, responses, estimators) -> dict:
    """Statistics, estimator scores and teacher-forced probes of one record's sampled responses."""
    needs = {"embeddings"} | {n for est in estimators.values() for n in est.needs}
    stats = statistics(responses, questions, needs, embedder)
    alt = record["alt"]
    probes = {"reliability": [(record["prompt"], alt)]}
    if "rephrase" in task.metrics["edit_success"] and record.get("rephrase"):
        probes["generalization"] = [(record["rephrase"], alt)]
    probes["portability"] = [(p["prompt"], p["answers"][0]) for p in record["portability"]
                             if not task.metrics["portability"] or p["kind"] in task.metrics["portability"]]
    locality = [(p["prompt"], p["answers"][0]) for p in record["locality"]
                if not task.metrics["locality"] or p["kind"] in task.metrics["locality"]]
    flat = [r for row in responses for r in row]
    out = {"responses": responses,
           **{key: est(stats) for key, est in estimators.items()},
           "U_level": level_uncertainty(stats["embeddings"], task.uncertainty.distance).tolist(),
           "adoption": M.adoption_rates(flat, [alt], record["answer_aliases"]),
           "fluency": M.ngram_entropy(flat)}
    for name, pairs in probes.items():
        out[name] = (M.edit_accuracy(model, tokenizer, [wrap(p) for p, _ in pairs], [t for _, t in pairs])
                     if pairs else [])
    out["locality_argmax"] = (M.teacher_forced_argmax(model, tokenizer, [wrap(p) for p, _ in locality],
                                                      [t for _, t in locality]) if locality else [])
    return out


def pre_edit_key(task: Task, fingerprint: str, info, model) -> dict:
    """Everything the pre-edit pass depends on: reuse it only when each of these is the same."""
    import torch
    import transformers

    key = {"model": info.id, "revision": info.revision, "dtype": info.dtype,
           "dtype_used": str(next(model.parameters()).dtype).removeprefix("torch."), "device": info.device,
           "task_hash": task.hash, "dataset": fingerprint, "seed": task.seed, "sampler_version": SAMPLER_VERSION,
           "torch": torch.__version__, "transformers": transformers.__version__}
    if task.free_answers:   # a cached pass without them (or with other lengths) is not this pass
        key["free_answers"] = task.free_answers
    return key
