"""The aggregates of a results file, recomputed from its per-sample log.

A submission is accepted only when every number in ``results.json`` (metrics, uncertainty, adoption,
breakdowns, counts) follows from ``samples.jsonl``. This is a second, independent implementation of the
procedure the README documents (section "Running the benchmark", "Reported"); it never imports
``benchmark``:

* a metric is the mean over records of each record's probe mean (records without the probe skipped),
  with a 95% percentile bootstrap CI;
* for U, U_alea, U_epis, each topic, each paraphrase level and each adoption group: the mean of U_pre and
  of U_post, ΔU = (mean U_post - mean U_pre) / max(mean U_pre, floor) (ratio of means), the mean of the
  per-record relative changes (U_pre floored the same way) and mean(U_post - U_pre), each with a 95%
  *paired* percentile bootstrap CI (one draw of record indices serves pre and post);
* bootstrap resamples: ``numpy.random.default_rng(bootstrap_seed).integers(0, n, (n_boot, n))`` over the
  ok records in dataset order, ``n_boot`` and the floor read from the task file;
* sequential runs (``edit_mode: sequential``): the above over the edit steps (lines of kind ``edit``), and the
  trajectory: per edit step, the record's own ΔU (one record: (U_post - U_pre) / max(U_pre, floor)), its Edit
  Success and the weights' change so far; per panel line (kind ``panel``), for its edited and its untouched
  records, ΔU as above and the mean Edit Success and Locality with their CIs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

METRIC_NAMES = ("reliability", "generalization", "portability", "locality")
UNCERTAINTY_KEYS = ("U", "U_alea", "U_epis")
DELTA_KEYS = ("delta_u", "delta_u_mean", "delta_u_median", "abs_diff", "u_pre", "u_post")
ALPHA = 0.05
REL_TOL, ABS_TOL = 1e-9, 1e-12


@dataclass(frozen=True)
class Settings:
    """What the recomputation needs from the task file and the provenance."""
    levels: tuple[int, ...]
    floor: float
    n_boot: int
    seed: int
    sequential: dict | None = None   # the task's ``sequential`` settings when its edit mode is sequential


class SampleError(ValueError):
    """A line of samples.jsonl lacks what the aggregates are computed from."""


def _none_estimate() -> dict:
    return {"value": None, "ci_low": None, "ci_high": None}


def _percentiles(value: float, boot: np.ndarray) -> dict:
    low, high = np.quantile(boot, [ALPHA / 2, 1 - ALPHA / 2])
    return {"value": float(value), "ci_low": float(low), "ci_high": float(high)}


def mean_estimate(values: list[float | None], s: Settings) -> dict:
    """Mean of the non-null values with a percentile bootstrap CI; all null when there is none."""
    x = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if x.size == 0:
        return _none_estimate()
    idx = np.random.default_rng(s.seed).integers(0, x.size, size=(s.n_boot, x.size))
    return _percentiles(x.mean(), x[idx].mean(axis=1))


def delta_estimates(pre: np.ndarray, post: np.ndarray, s: Settings) -> dict:
    """ΔU (ratio of means), mean and median per-record ΔU, mean absolute change and the two means, paired CIs;
    the count of records whose U_pre lies below the floor."""
    pre, post = np.asarray(pre, dtype=np.float64), np.asarray(post, dtype=np.float64)
    n = pre.shape[0]
    if n == 0:
        return {"n": 0, "n_floor": 0, **{k: _none_estimate() for k in DELTA_KEYS}}

    def statistics(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
        # a, b: (..., n) U_pre and U_post -> each statistic (...,)
        mean_a, mean_b = a.mean(axis=-1), b.mean(axis=-1)
        per_record = (b - a) / np.maximum(a, s.floor)
        return {"delta_u": (mean_b - mean_a) / np.maximum(mean_a, s.floor),
                "delta_u_mean": per_record.mean(axis=-1), "delta_u_median": np.median(per_record, axis=-1),
                "abs_diff": (b - a).mean(axis=-1),
                "u_pre": mean_a, "u_post": mean_b}

    idx = np.random.default_rng(s.seed).integers(0, n, size=(s.n_boot, n))  # shared by pre and post
    point, boot = statistics(pre, post), statistics(pre[idx], post[idx])
    return {"n": n, "n_floor": int((pre < s.floor).sum()), **{k: _percentiles(point[k], boot[k]) for k in DELTA_KEYS}}


def _grouped(pre: np.ndarray, post: np.ndarray, labels: list[str], s: Settings) -> dict:
    keys = np.asarray(labels, dtype=object)
    return {g: delta_estimates(pre[keys == g], post[keys == g], s) for g in dict.fromkeys(labels)}


def _get(line: dict, *path: str) -> Any:
    node: Any = line
    for key in path:
        if not isinstance(node, dict) or key not in node:
            raise SampleError(f"record {line.get('id')!r}: missing field {'.'.join(path)}")
        node = node[key]
    return node


def _probe_mean(values: Any, where: str) -> float | None:
    if not isinstance(values, list):
        raise SampleError(f"{where} is not a list")
    return float(np.mean(values)) if values else None


def recompute(lines: list[dict], s: Settings) -> dict:
    """metrics, uncertainty, adoption, breakdowns, counts (and for a sequential run its trajectory) of a results
    file, from its samples."""
    panels = [x for x in lines if isinstance(x, dict) and x.get("kind") == "panel"]
    lines = [x for x in lines if not (isinstance(x, dict) and x.get("kind") == "panel")]
    for i, line in enumerate(lines):
        if not isinstance(line, dict) or line.get("status") not in ("ok", "failed") or "id" not in line \
                or not isinstance(line.get("position"), int):
            raise SampleError(f"line {i + 1}: needs 'id', an integer 'position' and 'status' ok|failed")
        if line["status"] == "ok" and not (isinstance(line.get("pre"), dict) and isinstance(line.get("post"), dict)):
            raise SampleError(f"record {line['id']!r}: an ok record needs 'pre' and 'post' objects")
    ids = [x["id"] for x in lines]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise SampleError(f"record {dup!r} appears more than once")
    ok = sorted((x for x in lines if x["status"] == "ok"), key=lambda x: x["position"])

    def column(state: str, key: str) -> np.ndarray:
        return np.asarray([float(_get(x, state, key)) for x in ok], dtype=np.float64)

    metrics = {name: mean_estimate([_probe_mean(x["post"].get(name, []), f"record {x['id']!r}: post.{name}")
                                    for x in ok], s) for name in METRIC_NAMES}
    metrics["fluency"] = mean_estimate([_get(x, "post", "fluency") for x in ok], s)
    uncertainty = {key: delta_estimates(column("pre", key), column("post", key), s) for key in UNCERTAINTY_KEYS}
    adoption = {f"{kind}_{state}": mean_estimate([_get(x, state, "adoption", kind) for x in ok], s)
                for kind in ("new", "old") for state in ("pre", "post")}
    levels = {}
    for j, level in enumerate(s.levels):
        pre_l, post_l = [], []
        for x in ok:
            a, b = _get(x, "pre", "U_level"), _get(x, "post", "U_level")
            if not (isinstance(a, list) and isinstance(b, list) and len(a) == len(b) == len(s.levels)):
                raise SampleError(f"record {x['id']!r}: U_level needs {len(s.levels)} values, pre and post")
            pre_l.append(a[j])
            post_l.append(b[j])
        levels[str(level)] = delta_estimates(np.asarray(pre_l, dtype=np.float64),
                                             np.asarray(post_l, dtype=np.float64), s)
    u_pre, u_post = column("pre", "U"), column("post", "U")
    adopted = ["adopted" if _get(x, "post", "adoption", "new") > 0 else "not_adopted" for x in ok]
    out = {
        "metrics": metrics, "uncertainty": uncertainty, "adoption": adoption,
        "breakdowns": {"topic": _grouped(u_pre, u_post, [str(x.get("topic")) for x in ok], s),
                       "level": levels,
                       "adoption": _grouped(u_pre, u_post, adopted, s)},
        "counts": {"records": len(lines), "ok": len(ok), "failed": len(lines) - len(ok)},
    }
    if s.sequential is not None:
        out["sequential"] = trajectory(ok, panels, s)
    elif panels:
        raise SampleError("panel lines belong to sequential runs only")
    return out


def _step(line: dict, s: Settings) -> dict:
    if not isinstance(line.get("step"), int):
        raise SampleError(f"record {line['id']!r}: a sequential edit needs an integer 'step'")
    pre, post = float(_get(line, "pre", "U")), float(_get(line, "post", "U"))
    return {"step": line["step"], "id": line["id"], "delta_u": (post - pre) / max(pre, s.floor),
            "reliability": _probe_mean(_get(line, "post", "reliability"), f"record {line['id']!r}: post.reliability"),
            "weight_change": _get(line, "edit", "weight_change"), "edit_norm": line["edit"].get("edit_norm")}


def _panel(line: dict, s: Settings) -> dict:
    if not isinstance(line.get("step"), int):
        raise SampleError("a panel line needs an integer 'step'")
    row = {"step": line["step"], "weight_change": line.get("weight_change")}
    for group in ("edited", "untouched"):
        members = line.get(group)
        if not isinstance(members, list) or not all(isinstance(m, dict) for m in members):
            raise SampleError(f"panel at step {line['step']}: '{group}' needs a list of records")
        where = f"panel at step {line['step']}, {group}"
        pre = np.asarray([float(_get(m, "pre", "U")) for m in members], dtype=np.float64)
        post = np.asarray([float(_get(m, "post", "U")) for m in members], dtype=np.float64)
        row[group] = {"n": len(members), "delta_u": delta_estimates(pre, post, s)["delta_u"],
                      "reliability": mean_estimate([_probe_mean(_get(m, "post", "reliability"), where)
                                                    for m in members], s),
                      "locality": mean_estimate([_probe_mean(_get(m, "post", "locality"), where)
                                                 for m in members], s)}
    return row


def trajectory(ok: list[dict], panels: list[dict], s: Settings) -> dict:
    """A sequential run's ``sequential`` section: its edit steps and panels in step order, and the task's
    settings."""
    steps = [_step(x, s) for x in sorted(ok, key=lambda x: x.get("step") if isinstance(x.get("step"), int) else -1)]
    rows = [_panel(p, s) for p in sorted(panels, key=lambda p: p.get("step") if isinstance(p.get("step"), int) else -1)]
    return {"steps": steps, "panels": rows, "settings": dict(s.sequential)}


def mismatches(expected: Any, reported: Any, path: str = "") -> Iterator[str]:
    """Dotted paths where ``reported`` differs from ``expected`` (numbers within 1e-9 relative).

    Keys only ``reported`` has are mismatches too (no number on the site may go unchecked), except
    ``params``: the bootstrap settings echoed by the runner, which the recomputation reads from the task.
    """
    if isinstance(expected, dict):
        if not isinstance(reported, dict):
            yield path
            return
        for key in expected:
            yield from mismatches(expected[key], reported.get(key, _MISSING), f"{path}.{key}" if path else key)
        for key in reported:
            if key not in expected and key != "params":
                yield f"{path}.{key}" if path else key
        return
    if expected is None or reported is None or reported is _MISSING:
        if expected is not reported:
            yield path
        return
    if isinstance(expected, list):
        if not isinstance(reported, list) or len(reported) != len(expected):
            yield path
            return
        for i, (e, r) in enumerate(zip(expected, reported)):
            yield from mismatches(e, r, f"{path}.{i}")
        return
    if isinstance(expected, str):
        if reported != expected:
            yield path
        return
    if isinstance(reported, bool) or not isinstance(reported, (int, float)):
        yield path
    elif isinstance(expected, int) and not isinstance(expected, bool):
        if reported != expected:
            yield path
    elif not math.isclose(float(reported), float(expected), rel_tol=REL_TOL, abs_tol=ABS_TOL):
        yield path


_MISSING = object()


def lookup(doc: Any, dotted: str) -> Any:
    """The value at a dotted path, or None (for error messages)."""
    node = doc
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node
