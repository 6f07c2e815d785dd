"""The site's figures, drawn once at build time with matplotlib and written as SVG.

Labels come from submissions and may hold any string, so math-text parsing is off (a "$" stays a "$") and
text is written as SVG ``<text>`` elements, which matplotlib XML-escapes; the pages embed the files with
``<img>``, where an SVG can never run script. No pyplot: each figure is a standalone ``Figure``.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from matplotlib import rc_context
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

RC = {"text.parse_math": False, "svg.fonttype": "none", "svg.hashsalt": "editprobe-leaderboard",
      "font.size": 9, "axes.spines.top": False, "axes.spines.right": False}
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22")


def _write(fig: Figure, path: Path) -> None:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(buf.getvalue(), encoding="utf-8")


def _short(label: str, n: int = 32) -> str:
    return label if len(label) <= n else label[: n - 1] + "…"


def _finite(x) -> bool:
    return x is not None and math.isfinite(x)


def scatter(points: list[dict], path: Path, title: str) -> None:
    """Edit Success (x) against ΔU (y), one point per run with its ΔU CI; unranked runs hollow.

    ``points``: {"label", "x", "y", "y_low", "y_high", "ranked"}.
    """
    with rc_context(RC):
        fig = Figure(figsize=(6.0, 4.0))
        ax = fig.add_subplot()
        shown = [p for p in points if _finite(p["x"]) and _finite(p["y"])]
        for i, p in enumerate(shown):
            color = PALETTE[i % len(PALETTE)]
            if _finite(p.get("y_low")) and _finite(p.get("y_high")):
                ax.errorbar(p["x"], p["y"], yerr=[[p["y"] - p["y_low"]], [p["y_high"] - p["y"]]], fmt="none",
                            ecolor=color, alpha=0.5, capsize=3)
            ax.scatter([p["x"]], [p["y"]], s=48, color=color if p["ranked"] else "white", edgecolors=color,
                       linewidths=1.5, zorder=3)
            ax.annotate(_short(p["label"]), (p["x"], p["y"]), textcoords="offset points", xytext=(6, 5),
                        fontsize=8, color="#333333")
        ax.axhline(0, color="#999999", lw=0.8, ls="--")
        ax.set_xlim(-0.05, 1.05)
        ax.set_xlabel("Edit Success (reliability) — higher is better")
        ax.set_ylabel("ΔU — nearer the null run is better")
        ax.set_title(title)
        if not shown:
            ax.text(0.5, 0.5, "no run with both numbers yet", ha="center", va="center", transform=ax.transAxes)
        _write(fig, path)


def topic_heatmap(rows: list[str], topics: list[str], values: list[list[float | None]], path: Path,
                  title: str) -> None:
    """ΔU per run (rows) and topic (columns); grey where a run has no record of that topic."""
    data = np.array([[v if _finite(v) else np.nan for v in row] for row in values], dtype=float).reshape(
        len(rows), len(topics))
    with rc_context(RC):
        fig = Figure(figsize=(max(7.0, 0.55 * len(topics) + 2.5), 1.2 + 0.38 * max(len(rows), 1)))
        ax = fig.add_subplot()
        finite = data[np.isfinite(data)]
        bound = float(np.max(np.abs(finite))) if finite.size else 1.0
        bound = bound if bound > 0 else 1.0
        cmap = _cmap()
        image = ax.imshow(np.ma.masked_invalid(data) if rows else np.full((1, len(topics)), np.nan), cmap=cmap,
                          norm=TwoSlopeNorm(0.0, -bound, bound), aspect="auto")
        for (i, j), v in np.ndenumerate(data):
            if np.isfinite(v):
                ax.text(j, i, f"{v:+.2f}", ha="center", va="center", fontsize=7,
                        color="white" if abs(v) > 0.6 * bound else "black")
        ax.set_xticks(range(len(topics)), [_short(t, 22) for t in topics], rotation=40, ha="right")
        ax.set_yticks(range(len(rows)), [_short(r) for r in rows])
        ax.set_title(title)
        fig.colorbar(image, ax=ax, label="ΔU", shrink=0.8)
        _write(fig, path)


def _cmap():
    from matplotlib import colormaps

    return colormaps["RdBu_r"].with_extremes(bad="#eeeeee")


def level_curves(curves: list[dict], levels: list[int], path: Path, title: str) -> None:
    """ΔU against paraphrase level, one line per run. ``curves``: {"label", "values", "ranked"}."""
    with rc_context(RC):
        fig = Figure(figsize=(6.0, 3.6))
        ax = fig.add_subplot()
        for i, c in enumerate(curves):
            ys = [v if _finite(v) else np.nan for v in c["values"]]
            ax.plot(levels, ys, marker="o", color=PALETTE[i % len(PALETTE)], ls="-" if c["ranked"] else ":",
                    label=_short(c["label"]))
        ax.axhline(0, color="#999999", lw=0.8, ls="--")
        ax.set_xticks(levels)
        ax.set_xlabel("paraphrase level (1 near-identical … 6 distant)")
        ax.set_ylabel("ΔU")
        ax.set_title(title)
        if curves:
            ax.legend(fontsize=7, frameon=False, loc="best")
        else:
            ax.text(0.5, 0.5, "no run yet", ha="center", va="center", transform=ax.transAxes)
        _write(fig, path)


def sequential_curves(runs: list[dict], path: Path, title: str) -> None:
    """ΔU against the number of edits applied, one colour per run: the panel of earlier-edited records (solid,
    with its CI band), the never-edited records (dashed), and each edit step's own record (dots).
    ``runs``: {"label", "sequential"} with a results file's ``sequential`` section."""
    with rc_context(RC):
        fig = Figure(figsize=(6.4, 3.8))
        ax = fig.add_subplot()
        for i, run in enumerate(runs):
            colour, seq = PALETTE[i % len(PALETTE)], run["sequential"]
            steps = [s["step"] for s in seq["steps"]]
            ax.plot(steps, [s["delta_u"] if _finite(s["delta_u"]) else np.nan for s in seq["steps"]], ls="none",
                    marker=".", color=colour, alpha=0.45)
            panels = seq["panels"]
            xs = [p["step"] for p in panels]
            for group, style in (("edited", "-"), ("untouched", "--")):
                d = [p[group]["delta_u"] for p in panels]
                ys = [v["value"] if _finite(v["value"]) else np.nan for v in d]
                ax.plot(xs, ys, ls=style, marker="o", color=colour,
                        label=f"{_short(run['label'])}: {'earlier edits' if group == 'edited' else 'never edited'}")
                if group == "edited":
                    ax.fill_between(xs, [v["ci_low"] for v in d], [v["ci_high"] for v in d], color=colour,
                                    alpha=0.12, lw=0)
        ax.axhline(0, color="#999999", lw=0.8, ls="--")
        ax.set_xlabel("edits applied")
        ax.set_ylabel("ΔU (mean U_post / mean U_pre − 1)")
        ax.set_title(title)
        if runs:
            ax.legend(fontsize=7, frameon=False, loc="best")
        _write(fig, path)
