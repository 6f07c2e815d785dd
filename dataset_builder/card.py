"""The statistics the dataset card shows, computed from the build report, and the card's figure.

Every table here is derived from ``build_report.json`` (what the build measured), so the card never states a
number the report does not hold. The figure shows, per level, how far the kept paraphrases are from the
question they paraphrase (edit distance, MiniLM similarity) and how long they are.
"""

from __future__ import annotations

from pathlib import Path

from editprobe.formats import load_topics

STATS_FIGURE = "paraphrase_stats.png"
_METRICS = (("levenshtein", "edit distance / length"), ("similarity", "MiniLM cosine"), ("words", "words"))


def plot_paraphrase_stats(gates: dict, path: Path) -> str | None:
    """Box plots per level of the kept paraphrases' metrics, one colour per config; the file name, or None
    when there is nothing to draw or matplotlib is not installed (the card then says so)."""
    gates = {c: g for c, g in gates.items() if g is not None and any(g.values.get(lv) for lv in range(1, 7))}
    if not gates:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    configs = list(gates)
    width = 0.8 / len(configs)
    colours = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, len(_METRICS), figsize=(5.2 * len(_METRICS), 4.2))
    for ax, (metric, label) in zip(axes, _METRICS):
        for k, config in enumerate(configs):
            data = [gates[config].values.get(level, {}).get(metric, []) for level in range(1, 7)]
            positions = [level - 0.4 + width * (k + 0.5) for level in range(1, 7)]
            kept = [(p, d) for p, d in zip(positions, data) if d]
            if not kept:
                continue
            parts = ax.boxplot([d for _, d in kept], positions=[p for p, _ in kept], widths=width * 0.9,
                               patch_artist=True, showfliers=False, manage_ticks=False)
            for box in parts["boxes"]:
                box.set_facecolor(colours(k % 10))
                box.set_alpha(0.75)
            ax.plot([], [], color=colours(k % 10), linewidth=6, alpha=0.75, label=config)
        ax.set_xticks(range(1, 7), [f"L{level}" for level in range(1, 7)])
        ax.set_title(label)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=7, loc="upper left")
    fig.suptitle("Kept paraphrases per level (boxes: quartiles, whiskers 1.5 IQR)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path).name


def _threshold_tables(report: dict) -> str:
    out = []
    for name, levels in report["gate_thresholds"].items():
        rows = [f"**{name}**", "", "| level | name | gate |", "|---|---|---|"]
        rows += [f"| {level} | {t['name']} | {', '.join(t['bounds']) or '-'} |" for level, t in levels.items()]
        out.append("\n".join(rows))
    return "\n\n".join(out)


def _gate_results(report: dict) -> str:
    rows = ["| config | " + " | ".join(f"L{level}" for level in range(1, 7)) + " |", "|---" * 7 + "|"]
    for config, c in report["configs"].items():
        cells = []
        for level in range(1, 7):
            g = c["gates"][str(level)]
            total = g["passed"] + g["failed"]
            cells.append(f"{g['passed']}/{total}" if total else "-")
        rows.append(f"| {config} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _distributions(report: dict) -> str:
    rows = ["| config | metric | " + " | ".join(f"L{level}" for level in range(1, 7)) + " |", "|---" * 8 + "|"]
    for config, c in report["configs"].items():
        for metric, label in _METRICS:
            cells = []
            for level in range(1, 7):
                d = c["gates"][str(level)].get("passed_distribution", {}).get(metric)
                f = ".0f" if metric == "words" else ".2f"
                cells.append(f"{d['p50']:{f}} ({d['p10']:{f}}-{d['p90']:{f}})" if d else "-")
            rows.append(f"| {config} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _topics(report: dict) -> str:
    configs = list(report["configs"])
    rows = ["| topic | " + " | ".join(configs) + " |", "|---" * (len(configs) + 1) + "|"]
    for topic in load_topics():
        rows.append(f"| {topic} | " + " | ".join(str(report["configs"][c]["topics"].get("distribution", {})
                                                      .get(topic, 0)) for c in configs) + " |")
    return "\n".join(rows)


def _topic_agreement(report: dict) -> str:
    rows = ["| config | assigned by | assigned = zero-shot MiniLM | LLM = zero-shot |", "|---|---|---|---|"]
    for config, c in report["configs"].items():
        t = c["topics"]
        vs = t.get("hand_checked_vs_zero_shot") or {}
        hand = (f"{vs['agree']}/{vs['compared']} ({vs['agree'] / vs['compared']:.0%})"
                if vs.get("compared") else "-")
        llm = t.get("agreement") or {}
        llm_cell = f"{llm['agree']}/{llm['compared']}" if llm.get("compared") else "-"
        who = "the paraphrase file" if t.get("hand_checked") else f"classifier ({t['method']})"
        rows.append(f"| {config} | {who} | {hand} | {llm_cell} |")
    return "\n".join(rows)


def _exclusions(report: dict) -> str:
    lines = []
    for config, c in report["configs"].items():
        if not c["excluded"]:
            lines.append(f"- {config}: none of the {c['records_in']} records read was left out.")
            continue
        why = "; ".join(f"{kind} ({n})" for kind, n in c["excluded_by_reason"].items())
        lines.append(f"- {config}: {c['excluded']} of {c['records_in']} left out: {why}.")
    return "\n".join(lines)


def _load_calls(report: dict) -> str:
    lines = ["from datasets import load_dataset", ""]
    lines += [f'{c} = load_dataset("<this folder or repo>", "{c}", split="test")' for c in report["configs"]]
    return "\n".join(lines)


def card_values(report: dict) -> dict[str, str]:
    """The ``$placeholders`` of card.md that hold statistics."""
    figure = report.get("figure")
    return {
        "gate_table": _threshold_tables(report),
        "gate_results": _gate_results(report),
        "distributions": _distributions(report),
        "figure": (f"![Distances and lengths of the kept paraphrases per level]({figure})" if figure else
                   "(figure not drawn: matplotlib is not installed)"),
        "topic_table": _topics(report),
        "topic_agreement": _topic_agreement(report),
        "exclusions": _exclusions(report),
        "load_calls": _load_calls(report),
        "schemes": ", ".join(sorted(set(report.get("schemes", {}).values()))) or report.get("scheme", ""),
    }
