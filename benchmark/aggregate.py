"""Aggregates of a run from its samples.jsonl lines: the standard metrics with bootstrap CIs, ΔU for every
estimator the task scores, breakdowns, and (sequential mode) the per-step trajectory. Torch-free: ``run`` and
``merge`` call the same code, and the leaderboard can recompute it."""

from __future__ import annotations

import numpy as np

from editprobe.benchmark.protocols import PROTOCOLS
from editprobe.benchmark.storage import jsonable
from editprobe.benchmark.tasks import Task
from editprobe.benchmark.uncertainty import breakdown, summarize_delta
from editprobe.formats import validate

BOOTSTRAP_SEED = 0
STANDARD_METRICS = ("reliability", "generalization", "portability", "locality")


def mean_ci(values: list[float], n_boot: int, seed: int = BOOTSTRAP_SEED) -> dict:
    x = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if x.size == 0:
        return {"value": None, "ci_low": None, "ci_high": None}
    idx = np.random.default_rng(seed).integers(0, x.size, size=(n_boot, x.size))
    boot = x[idx].mean(axis=1)
    return {"value": float(x.mean()), "ci_low": float(np.quantile(boot, 0.025)),
            "ci_high": float(np.quantile(boot, 0.975))}


def record_mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def scored_lines(lines: list[dict]) -> list[dict]:
    """The records that scored, in dataset order (sequential runs: the edit steps)."""
    units = [x for x in lines if x.get("kind", "record") in ("record", "edit")]
    return [x for x in sorted(units, key=lambda x: x["position"]) if x["status"] == "ok"]


def aggregate(lines: list[dict], task: Task) -> dict:
    """Aggregates, breakdowns and counts from samples.jsonl lines (any order; records ordered by position)."""
    ok = scored_lines(lines)
    units = [x for x in lines if x.get("kind", "record") in ("record", "edit")]
    nb, floor = task.uncertainty.bootstrap, task.uncertainty.delta_floor
    kw = {"floor": floor, "n_boot": nb, "seed": BOOTSTRAP_SEED}

    def arr(state, key):
        return np.asarray([x[state][key] for x in ok], dtype=np.float64)

    # a probe kind a dataset lacks (WikiData_recent has no rephrasings) is absent from the lines: a null metric
    metrics = {name: mean_ci([record_mean(x["post"].get(name, [])) for x in ok], nb) for name in STANDARD_METRICS}
    metrics["fluency"] = mean_ci([x["post"]["fluency"] for x in ok], nb)
    uncertainty = {key: summarize_delta(arr("pre", key), arr("post", key), **kw) for key in task.estimators}
    adoption = {f"{kind}_{state}": mean_ci([x[state]["adoption"][kind] for x in ok], nb)
                for kind in ("new", "old") for state in ("pre", "post")}
    by_level = {str(lvl): summarize_delta(np.asarray([x["pre"]["U_level"][j] for x in ok]),
                                          np.asarray([x["post"]["U_level"][j] for x in ok]), **kw)
                for j, lvl in enumerate(task.uncertainty.levels)}
    adopted = ["adopted" if x["post"]["adoption"]["new"] > 0 else "not_adopted" for x in ok]
    doc = {
        "metrics": metrics, "uncertainty": uncertainty, "adoption": adoption,
        "breakdowns": {"topic": breakdown(arr("pre", "U"), arr("post", "U"), [str(x["topic"]) for x in ok], **kw),
                       "level": by_level,
                       "adoption": breakdown(arr("pre", "U"), arr("post", "U"), adopted, **kw)},
        "counts": {"records": len(units), "ok": len(ok), "failed": len(units) - len(ok)},
    }
    if task.edit_mode == "sequential":
        doc["sequential"] = trajectory(lines, task)
    return doc


def trajectory(lines: list[dict], task: Task) -> dict:
    """The sequential run's curve: per panel step, ΔU of the panel's edited and untouched records (ratio of mean
    U, with CIs), Edit Success retained on the panel's edited records, locality drift of the untouched ones, and the
    weight change so far; per edit step, the edited record's own ΔU and the edit's size."""
    nb, floor = task.uncertainty.bootstrap, task.uncertainty.delta_floor
    kw = {"floor": floor, "n_boot": nb, "seed": BOOTSTRAP_SEED}
    edits = sorted((x for x in lines if x.get("kind") == "edit" and x["status"] == "ok"), key=lambda x: x["step"])
    steps = []
    for x in edits:
        steps.append({"step": x["step"], "id": x["id"],
                      "delta_u": summarize_delta([x["pre"]["U"]], [x["post"]["U"]], **kw)["delta_u"]["value"],
                      "reliability": record_mean(x["post"]["reliability"]),
                      "weight_change": x["edit"]["weight_change"], "edit_norm": x["edit"].get("edit_norm")})
    panels = []
    for p in sorted((x for x in lines if x.get("kind") == "panel"), key=lambda x: x["step"]):
        row = {"step": p["step"], "weight_change": p["weight_change"]}
        for group in ("edited", "untouched"):
            members = p[group]
            pre = [m["pre"]["U"] for m in members]
            post = [m["post"]["U"] for m in members]
            row[group] = {"n": len(members), "delta_u": summarize_delta(pre, post, **kw)["delta_u"],
                          "reliability": mean_ci([record_mean(m["post"]["reliability"]) for m in members], nb),
                          "locality": mean_ci([record_mean(m["post"]["locality"]) for m in members], nb)}
        panels.append(row)
    return {"steps": steps, "panels": panels,
            "settings": {"measure_every": task.sequential.measure_every, "panel_edited": task.sequential.panel_edited,
                         "panel_untouched": task.sequential.panel_untouched} if task.sequential else None}


def results_document(lines: list[dict], task: Task, provenance: dict, timings: dict) -> dict:
    doc = {"schema_version": 1, "provenance": provenance, **aggregate(lines, task), "timings": timings,
           "protocols": PROTOCOLS}
    doc = jsonable(doc)
    validate(doc, "results", "results.json")
    return doc
