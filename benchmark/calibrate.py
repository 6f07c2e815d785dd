"""Does ΔU track what a reader sees? Correlate the uncertainty change with the judged degradation (seed Table 2).

For each record of each run: ΔU_r = U_post / U_pre − 1 (the record's own relative change of U), and the judged
degradation D_r = the mean over the slots scored in both states of (pre score − post score) on the 0-5 rubric
(``editprobe.benchmark.judge``): positive when the edit made the answers worse. Per run (one editor): ΔU = mean
U_post / mean U_pre − 1 over its judged records (the runner's ratio-of-means estimand) and D = the mean D_r.

Reported: Spearman's rho and Pearson's r of (ΔU_r, D_r) over all records, and Spearman's rho of (ΔU, D) over the
runs, each with a 95% percentile bootstrap interval (records resampled with replacement, within each run for the
per-run figure; fixed seed). Nothing here imports torch; the figure needs matplotlib.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from editprobe.benchmark.judge import SLOTS, pearson, read_scores, scored_lines, spearman

BOOTSTRAP = 2000
SEED = 20250


@dataclass
class RunPoints:
    label: str                 # editor and preset, from the results file
    run_dir: str
    record_ids: list[str]
    u_pre: np.ndarray          # [n] U before the edit, per judged record
    u_post: np.ndarray         # [n]
    degradation: np.ndarray    # [n] mean over slots of (pre score - post score)
    slot_degradation: dict     # slot -> [n] (nan where the slot is not scored in both states)

    @property
    def delta_u_records(self) -> np.ndarray:
        return self.u_post / self.u_pre - 1

    def delta_u(self, idx=None) -> float:
        idx = slice(None) if idx is None else idx
        return float(self.u_post[idx].mean() / self.u_pre[idx].mean() - 1)


def _label(run_dir: Path) -> str:
    path = run_dir / "results.json"
    if not path.exists():
        return run_dir.name
    editor = json.loads(path.read_text())["provenance"]["editor"]
    return editor["name"] + (f" ({editor['preset']})" if editor.get("preset") not in (None, "defaults") else "")


def run_points(run_dir: Path, source: str, records: dict | None = None, slots: tuple[str, ...] = SLOTS) -> RunPoints:
    """The judged records of one run: those with U_pre > 0 and at least one of ``slots`` scored before and after;
    D_r averages over those ``slots`` (S2, S3 alone: the damage to neighbouring knowledge, which the edit is not
    meant to change, without S1, whose reference itself changes with the edit). ``records`` (by id) are needed
    for LLM scores only (default: the run's dataset)."""
    unknown = [x for x in slots if x not in SLOTS]
    if unknown or not slots:
        raise ValueError(f"slots must be among {', '.join(SLOTS)}, got {', '.join(slots) or 'none'}")
    run_dir = Path(run_dir)
    scores = read_scores(run_dir, source, records)
    if not scores:
        raise ValueError(f"{run_dir}: no scores from {source!r} (run `editprobe judge` first)")
    ids, pre_u, post_u, deg, per_slot = [], [], [], [], {s: [] for s in SLOTS}
    for line in scored_lines(run_dir)[1]:
        diffs = {}
        for slot in SLOTS:
            a, b = scores.get(f"{line['id']}:pre:{slot}"), scores.get(f"{line['id']}:post:{slot}")
            if a is not None and b is not None:
                diffs[slot] = a - b
        chosen = [diffs[x] for x in slots if x in diffs]
        if not chosen or not line["pre"]["U"] > 0:
            continue
        ids.append(line["id"])
        pre_u.append(line["pre"]["U"])
        post_u.append(line["post"]["U"])
        deg.append(sum(chosen) / len(chosen))
        for slot in SLOTS:
            per_slot[slot].append(diffs.get(slot, math.nan))
    if not ids:
        raise ValueError(f"{run_dir}: no record is scored both before and after the edit by {source!r}")
    return RunPoints(_label(run_dir), str(run_dir), ids, np.array(pre_u), np.array(post_u), np.array(deg),
                     {s: np.array(v) for s, v in per_slot.items()})


def _interval(values: list[float]) -> list[float | None]:
    finite = [v for v in values if math.isfinite(v)]
    if len(finite) < len(values) * 0.9:
        return [None, None]                       # too many degenerate resamples (constant scores) to say
    lo, hi = np.percentile(finite, [2.5, 97.5])
    return [float(lo), float(hi)]


def calibrate(runs: list[RunPoints], bootstrap: int = BOOTSTRAP, seed: int = SEED) -> dict:
    """The correlations (with bootstrap intervals) of ΔU with the judged degradation, per record and per run."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([r.delta_u_records for r in runs])
    y = np.concatenate([r.degradation for r in runs])
    n = len(x)
    rec = {"records": n, "spearman": spearman(list(x), list(y)), "pearson": pearson(list(x), list(y))}
    boots_s, boots_p = [], []
    for _ in range(bootstrap):
        idx = rng.integers(0, n, n)
        boots_s.append(spearman(list(x[idx]), list(y[idx])))
        boots_p.append(pearson(list(x[idx]), list(y[idx])))
    rec["spearman_ci"], rec["pearson_ci"] = _interval(boots_s), _interval(boots_p)
    by_slot = {}
    for slot in SLOTS:
        ys = np.concatenate([r.slot_degradation[slot] for r in runs])
        keep = np.isfinite(ys)
        by_slot[slot] = {"records": int(keep.sum()),
                         "spearman": spearman(list(x[keep]), list(ys[keep])) if keep.sum() > 2 else math.nan}
    out = {"per_record": rec, "per_slot": by_slot,
           "runs": [{"label": r.label, "run_dir": r.run_dir, "records": len(r.record_ids), "delta_u": r.delta_u(),
                     "degradation": float(r.degradation.mean()),
                     "u_pre": float(r.u_pre.mean()), "u_post": float(r.u_post.mean())} for r in runs],
           "bootstrap": {"resamples": bootstrap, "seed": seed}}
    if len(runs) >= 3:
        xs = [r.delta_u() for r in runs]
        ys = [float(r.degradation.mean()) for r in runs]
        boots = []
        for _ in range(bootstrap):
            picks = [rng.integers(0, len(r.record_ids), len(r.record_ids)) for r in runs]
            boots.append(spearman([r.delta_u(p) for r, p in zip(runs, picks)],
                                  [float(r.degradation[p].mean()) for r, p in zip(runs, picks)]))
        out["per_run"] = {"runs": len(runs), "spearman": spearman(xs, ys), "spearman_ci": _interval(boots)}
    else:
        out["per_run"] = {"runs": len(runs), "spearman": None, "spearman_ci": [None, None],
                          "note": "a per-run correlation needs at least three runs"}
    return out


def draw(runs: list[RunPoints], result: dict, path: Path, title: str) -> None:
    """Per-record ΔU against the judged degradation, coloured by run, with each run's (ΔU, D) as a large marker."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for i, r in enumerate(runs):
        colour = f"C{i % 10}"
        ax.scatter(100 * r.delta_u_records, r.degradation, s=14, alpha=0.55, color=colour, label=r.label)
        ax.scatter([100 * r.delta_u()], [r.degradation.mean()], s=120, marker="D", color=colour, edgecolor="black")
    ax.axhline(0, color="grey", lw=0.6)
    ax.axvline(0, color="grey", lw=0.6)
    rec = result["per_record"]
    ci = rec["spearman_ci"]
    ci_text = f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci[0] is not None else ""
    ax.set_xlabel("ΔU of the record (%)")
    ax.set_ylabel("judged degradation (pre − post score, 0-5 rubric)")
    ax.set_title(f"{title}\nSpearman ρ per record {rec['spearman']:+.2f}{ci_text}, n = {rec['records']}", fontsize=9)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
