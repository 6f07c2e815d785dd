"""Edit modes: how edits are applied and measured.

* ``single`` — each record alone: pre-edit pass (cached), edit, post-edit pass, restore;
* ``sequential`` — the records' edits one after another without restore (the accumulation the seed's theory is
  about, Section 3.3): after each edit the edited record is measured, and every ``measure_every`` edits a fixed
  panel (the first edited records and records never edited); everything is restored at the end, bit-exactly.
  A killed run resumes by replaying the recorded edits, each checked against the weight digest it left;
* ``batch`` — the records' edits written ``batch.size`` at a time (one editor call: MEMIT's and AlphaEdit's batch
  edit), then each record of the batch measured, then restore. Batches are formed in dataset order before
  sharding, so shards split whole batches and a batch is the same however the run is split.
"""

from __future__ import annotations

import contextlib
import logging
import time

from editprobe.benchmark import metrics as M
from editprobe.benchmark.editors import EditRequest, RestoreError
from editprobe.benchmark.measure import measure
from editprobe.benchmark.storage import append_line, jsonable

log = logging.getLogger("editprobe.run")


def request_for(record: dict) -> EditRequest:
    return EditRequest(record["id"], record["prompt"], record["subject"], record["alt"], record["answer"])


def pre_edit(model, tokenizer, record: dict, task, embedder, pre_cache, estimators) -> dict:
    pre = pre_cache.get(record["id"])
    if pre is None:
        pre = measure(model, tokenizer, record, task, embedder, estimators=estimators)
        pre_cache.put(record["id"], pre)
    return pre


def _post(model, tokenizer, record, task, embedder, editor, request, estimators, pre) -> dict:
    post = measure(model, tokenizer, record, task, embedder, editor, request, estimators=estimators)
    post["locality"] = M.locality_agreement(pre["locality_argmax"], post.pop("locality_argmax"))
    return post


# --------------------------------------------------------------------------- single

def score_record(model, tokenizer, record: dict, position: int, task, editor, embedder, pre_cache,
                 estimators: dict | None = None) -> dict:
    """One record in single mode -> its samples.jsonl line (status ok, or failed with the error)."""
    from editprobe.benchmark.measure import task_estimators

    estimators = estimators or task_estimators(task)
    t0 = time.perf_counter()
    pre = pre_edit(model, tokenizer, record, task, embedder, pre_cache, estimators)
    t1 = time.perf_counter()
    request = request_for(record)
    line = {"id": record["id"], "position": position, "topic": record["topic"]}
    handle = None
    try:
        handle = editor.apply(model, tokenizer, [request])
        t2 = time.perf_counter()
        post = _post(model, tokenizer, record, task, embedder, editor, request, estimators, pre)
    except RestoreError:
        raise
    except Exception as exc:  # an editor failure on one record is logged and the run goes on
        if handle is not None:
            handle.restore()
        log.error("record %s: %s: %s", record["id"], type(exc).__name__, exc)
        return {**line, "status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    handle.restore()
    t3 = time.perf_counter()
    return {**line, "status": "ok", "pre": pre, "post": post,
            "edit": {"diagnostics": jsonable(handle.diagnostics), "touched": handle.touched},
            "seconds": {"pre": t1 - t0, "edit": t2 - t1, "post": t3 - t2}}


# --------------------------------------------------------------------------- sequential

class EditChain:
    """The handles of the edits applied so far, the weight change since the first, and the restore at the end."""

    def __init__(self, model):
        from editprobe.benchmark.editors.base import state_digest

        self.model = model
        self.start_digest = state_digest(model)
        self.handles = []

    def add(self, handle) -> None:
        self.handles.append(handle)

    def weight_change(self) -> float:
        """‖W_t − W_0‖_F over every parameter any edit touched (W_0: its value before the first edit touching it)."""
        import torch

        params = dict(self.model.named_parameters())
        first = {}
        for h in self.handles:
            for name in h.touched:
                first.setdefault(name, h.original(name))
        with torch.no_grad():
            return float(sum(((params[n].detach() - w0).double() ** 2).sum() for n, w0 in first.items()) ** 0.5)

    def restore(self) -> None:
        """Undo every edit, last first; the whole state must equal the one before the first edit, bit for bit."""
        from editprobe.benchmark.editors.base import state_digest

        for h in reversed(self.handles):
            h.restore()
        self.handles = []
        if state_digest(self.model) != self.start_digest:
            raise RestoreError("the model differs from its state before the first edit after restoring the chain")


def edit_norms(handle) -> dict:
    """This edit's own size: ‖ΔW‖_F over what it touched, and the right-vector norms the editor reports."""
    out = {"delta_w": handle.drift()}
    right = handle.diagnostics.get("right_vector_norm")
    if right is not None:
        out["right_vector"] = jsonable(right)
    return out


def run_sequential(model, tokenizer, steps: list[tuple[int, dict]], untouched: list[tuple[int, dict]], task, editor,
                   embedder, pre_cache, estimators: dict, previous: list[dict], fh, progress: bool = True) -> None:
    """Apply the edits of ``steps`` in order without restore; measure as the module docstring says.

    ``previous`` are the samples.jsonl lines of an interrupted run: their edits are replayed (and checked by
    digest), their measurements kept. New lines are appended to ``fh``.
    """
    from tqdm.auto import tqdm

    settings = task.sequential
    done_edits = {x["step"]: x for x in previous if x.get("kind") == "edit"}
    done_panels = {x["step"] for x in previous if x.get("kind") == "panel"}
    panel_edited = steps[:settings.panel_edited]
    chain = EditChain(model)
    pres = {r["id"]: pre_edit(model, tokenizer, r, task, embedder, pre_cache, estimators)
            for _, r in panel_edited + untouched}
    try:
        bar = tqdm(list(enumerate(steps, start=1)), desc=f"{editor.name} sequential on {task.name}", unit="edit",
                   disable=not progress)
        for step, (position, record) in bar:
            request = request_for(record)
            if step in done_edits:
                _replay(model, tokenizer, editor, request, done_edits[step], chain)
            else:
                append_line(fh, _edit_step(model, tokenizer, step, position, record, request, task, editor, embedder,
                                           pre_cache, estimators, chain))
            if (step % settings.measure_every == 0 or step == len(steps)) and step not in done_panels:
                t0 = time.perf_counter()
                edited = [(p, r) for s, (p, r) in enumerate(panel_edited, start=1) if s <= step]
                line = {"kind": "panel", "step": step, "weight_change": chain.weight_change(),
                        "edited": [_member(model, tokenizer, r, task, embedder, editor, request_for(r), estimators,
                                           pres[r["id"]]) for _, r in edited],
                        "untouched": [_member(model, tokenizer, r, task, embedder, editor, None, estimators,
                                              pres[r["id"]]) for _, r in untouched]}
                line["seconds"] = time.perf_counter() - t0
                append_line(fh, line)
    finally:
        chain.restore()


def _edit_step(model, tokenizer, step, position, record, request, task, editor, embedder, pre_cache, estimators,
               chain) -> dict:
    t0 = time.perf_counter()
    pre = pre_edit(model, tokenizer, record, task, embedder, pre_cache, estimators)
    t1 = time.perf_counter()
    line = {"kind": "edit", "step": step, "id": record["id"], "position": position, "topic": record["topic"]}
    try:
        handle = editor.apply(model, tokenizer, [request])
    except Exception as exc:  # the chain goes on without this edit
        log.error("step %d, record %s: %s: %s", step, record["id"], type(exc).__name__, exc)
        return {**line, "status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    chain.add(handle)
    t2 = time.perf_counter()
    post = _post(model, tokenizer, record, task, embedder, editor, request, estimators, pre)
    t3 = time.perf_counter()
    return {**line, "status": "ok", "pre": pre, "post": post,
            "edit": {"diagnostics": jsonable(handle.diagnostics), "touched": handle.touched,
                     "digest": handle.digest(), "edit_norm": edit_norms(handle),
                     "weight_change": chain.weight_change()},
            "seconds": {"pre": t1 - t0, "edit": t2 - t1, "post": t3 - t2}}


def _replay(model, tokenizer, editor, request, line: dict, chain) -> None:
    if line["status"] != "ok":
        return
    handle = editor.apply(model, tokenizer, [request])
    chain.add(handle)
    if handle.digest() != line["edit"]["digest"]:
        raise RuntimeError(f"resuming: replaying edit {line['step']} ({line['id']}) gave other weights than the "
                           "interrupted run recorded; the chain cannot be resumed (delete the run folder)")


def _member(model, tokenizer, record, task, embedder, editor, request, estimators, pre) -> dict:
    post = _post(model, tokenizer, record, task, embedder, editor, request, estimators, pre)
    return {"id": record["id"], "pre": {k: pre[k] for k in estimators},
            "post": {**{k: post[k] for k in estimators}, "responses": post["responses"],
                     "reliability": post["reliability"], "locality": post["locality"]}}


# --------------------------------------------------------------------------- batch

def batches_of(chosen: list[tuple[int, dict]], size: int) -> list[list[tuple[int, dict]]]:
    return [chosen[i:i + size] for i in range(0, len(chosen), size)]


def run_batches(model, tokenizer, batches: list[tuple[int, list[tuple[int, dict]]]], task, editor, embedder,
                pre_cache, estimators: dict, done: set[str], fh, progress: bool = True) -> None:
    """``batches``: (batch index, members). A batch with members still to score is edited again as a whole (its
    edit is one call) and only those members are measured."""
    from tqdm.auto import tqdm

    bar = tqdm(batches, desc=f"{editor.name} batches on {task.name}", unit="batch", disable=not progress)
    for index, members in bar:
        todo = [(p, r) for p, r in members if r["id"] not in done]
        if not todo:
            continue
        t0 = time.perf_counter()
        pres = {r["id"]: pre_edit(model, tokenizer, r, task, embedder, pre_cache, estimators) for _, r in members}
        t1 = time.perf_counter()
        requests = [request_for(r) for _, r in members]
        base = {"batch": index, "batch_size": len(members)}
        try:
            handle = editor.apply(model, tokenizer, requests)
        except Exception as exc:  # the whole batch failed to edit; the run goes on
            log.error("batch %d: %s: %s", index, type(exc).__name__, exc)
            for p, r in todo:
                append_line(fh, {"id": r["id"], "position": p, "topic": r["topic"], **base, "status": "failed",
                                 "error": f"{type(exc).__name__}: {exc}"})
            continue
        t2 = time.perf_counter()
        try:
            for (p, r) in todo:
                s0 = time.perf_counter()
                post = _post(model, tokenizer, r, task, embedder, editor, request_for(r), estimators, pres[r["id"]])
                append_line(fh, {"id": r["id"], "position": p, "topic": r["topic"], **base, "status": "ok",
                                 "pre": pres[r["id"]], "post": post,
                                 "edit": {"diagnostics": jsonable(handle.diagnostics), "touched": handle.touched},
                                 "seconds": {"pre": (t1 - t0) / len(members), "edit": (t2 - t1) / len(members),
                                             "post": time.perf_counter() - s0}})
        finally:
            handle.restore()


# --------------------------------------------------------------------------- single edits, many at a time

def score_records(model, tokenizer, items: list[tuple[int, dict]], task, editor, embedder, pre_cache,
                  estimators: dict) -> list[dict]:
    """Single-edit semantics for several records at once (``editprobe.benchmark.multiedit``): the pre-edit passes
    of the records not cached are sampled in one batch; each edit is applied, its weight change kept and the
    weights restored; then every record's post-edit pass runs in one batch in which its rows see only its own edit.
    Returns the same lines as :func:`score_record`, one per item."""
    from editprobe.benchmark.measure import measure_many
    from editprobe.benchmark.multiedit import RowDeltas
    from editprobe.benchmark.sampling import ActiveRows

    t0 = time.perf_counter()
    pres = {r["id"]: pre_cache.get(r["id"]) for _, r in items}
    missing = [r for _, r in items if pres[r["id"]] is None]
    if missing:
        for r, pre in zip(missing, measure_many(model, tokenizer, missing, task, embedder, estimators=estimators)):
            pre_cache.put(r["id"], pre)
            pres[r["id"]] = pre
    pre_seconds = (time.perf_counter() - t0) / len(items)
    lines: dict[str, dict] = {}
    edited = []                       # (line, record, request, delta, diagnostics, touched, edit seconds)
    # ROME, MEMIT, AlphaEdit: the target vectors of all the records' edits in one batched optimisation
    prepare = getattr(editor, "batched_targets", None)
    targets = (prepare(model, tokenizer, [request_for(r) for _, r in items]) if prepare is not None
               else contextlib.nullcontext())
    with targets as prepared:
        shared = getattr(prepared, "seconds", 0.0) / len(items)   # each record's share of the batched optimisation
        _edit_each(model, tokenizer, items, editor, lines, edited, shared)
    if edited:
        t2 = time.perf_counter()
        m, k = len(task.uncertainty.levels), task.uncertainty.samples_per_paraphrase
        active = ActiveRows(0, next(model.parameters()).device)
        deltas = RowDeltas(model, [e[3] for e in edited], m * k, active)
        try:
            posts = measure_many(model, tokenizer, [e[1] for e in edited], task, embedder, editor,
                                 [e[2] for e in edited], estimators, deltas=deltas)
        finally:
            deltas.remove()
        post_seconds = (time.perf_counter() - t2) / len(edited)
        for (line, record, _, _, diagnostics, touched, edit_seconds), post in zip(edited, posts):
            pre = pres[record["id"]]
            post["locality"] = M.locality_agreement(pre["locality_argmax"], post.pop("locality_argmax"))
            lines[record["id"]] = {**line, "status": "ok", "pre": pre, "post": post,
                                   "edit": {"diagnostics": diagnostics, "touched": touched},
                                   "seconds": {"pre": pre_seconds, "edit": edit_seconds, "post": post_seconds}}
    return [lines[r["id"]] for _, r in items]


def _edit_each(model, tokenizer, items, editor, lines: dict, edited: list, shared_seconds: float) -> None:
    """Apply each record's edit alone, keep its weight change (``edited``) and restore; failures go to ``lines``."""
    from editprobe.benchmark.multiedit import capture_delta

    for position, record in items:
        line = {"id": record["id"], "position": position, "topic": record["topic"]}
        request = request_for(record)
        t1 = time.perf_counter()
        handle = None
        try:
            handle = editor.apply(model, tokenizer, [request])
            delta = capture_delta(model, handle)
        except RestoreError:
            raise
        except Exception as exc:
            if handle is not None:
                handle.restore()
            log.error("record %s: %s: %s", record["id"], type(exc).__name__, exc)
            lines[record["id"]] = {**line, "status": "failed", "error": f"{type(exc).__name__}: {exc}"}
            continue
        handle.restore()
        edited.append((line, record, request, delta, jsonable(handle.diagnostics), handle.touched,
                       time.perf_counter() - t1 + shared_seconds))
