"""The static site: overview tables, figures, one page per run, downloads and a "how to submit" page.

Every page is rendered by Jinja2 with autoescaping on; the only script is the vendored
``static/table.js``, which reads the rendered table (no data is ever injected into script), and a
Content-Security-Policy meta tag forbids inline script and every network fetch. All links are relative,
so the site works from ``file://`` and from any static host.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from editprobe import __version__
from editprobe.formats import load_topics
from editprobe.resources import leaderboard_dir
from editprobe.leaderboard import plots
from editprobe.leaderboard.known_tasks import KnownTask, load_known_tasks, task_sort_key
from editprobe.leaderboard.submissions import SAMPLES, Run, gzip_bytes
from editprobe.leaderboard.validation import MIN_SUBSET_RECORDS, Report, subset_size, validate_folder

GUIDE = "SUBMITTING.md"   # the how-to-submit page, a package file (leaderboard/SUBMITTING.md)
MARKER = ".editprobe-site"
N_EXAMPLES = 3
METRIC_COLUMNS = (("reliability", "Edit Succ."), ("locality", "Locality"), ("portability", "Portability"),
                  ("fluency", "Fluency"))
TABLE_FIELDS = ("rank", "status", "excess", "model", "model_revision", "editor", "task", "task_version", "task_hash",
                "reliability", "reliability_ci_low", "reliability_ci_high", "adoption", "adoption_ci_low",
                "adoption_ci_high", "locality", "locality_ci_low",
                "locality_ci_high", "portability", "portability_ci_low", "portability_ci_high", "fluency",
                "fluency_ci_low", "fluency_ci_high", "u_pre", "u_post", "delta_u", "delta_u_ci_low",
                "delta_u_ci_high", "records", "subset", "ok", "failed", "date", "ranked", "flags", "page")


class SiteError(ValueError):
    """The site cannot be written (e.g. the output folder holds something else)."""


# --------------------------------------------------------------------------- rows

def _estimate(node: dict | None) -> dict:
    return node if isinstance(node, dict) else {"value": None, "ci_low": None, "ci_high": None}


#: Edit Success (teacher-forced reliability, EasyEdit's token accuracy) at or above which a run's edits count as
#: taken: the edited model gives most target tokens. Below it the run is listed as "edit did not take".
EDIT_TAKES = 0.5
#: The controls: shown, never ranked; ``null`` sets the noise floor of its model and task.
CONTROLS = ("noop", "null")
STATUS_TEXT = {"ranked": "ranked", "partial": "not ranked", "control": "control",
               "did_not_take": "edit did not take", "no_floor": "no null run"}


def run_row(run: Run) -> dict:
    """One overview-table row of an accepted run."""
    doc, p = run.doc, run.doc["provenance"]
    u = doc["uncertainty"]["U"]
    row = {"slug": run.slug, "page": f"runs/{run.slug}/index.html", "model": p["model"]["id"],
           "model_revision": p["model"]["revision"], "editor": p["editor"]["name"], "task": p["task"]["name"],
           "task_version": p["task"]["version"], "task_hash": p["task"]["hash"],
           "u_pre": u["u_pre"]["value"], "u_post": u["u_post"]["value"], "delta_u": _estimate(u["delta_u"]),
           "adoption": _estimate((doc.get("adoption") or {}).get("new_post")),
           "records_digest": records_digest(run),
           "records": doc["counts"]["records"], "subset": subset_size(doc), "ok": doc["counts"]["ok"],
           "failed": doc["counts"]["failed"],
           "date": p["created"][:10], "created": p["created"], "flags": list(run.flags),
           "ranked": False, "rank": None, "status": None, "status_note": "", "excess": None}
    for key, _ in METRIC_COLUMNS:
        row[key] = _estimate(doc["metrics"].get(key))
    return row


def records_digest(run: Run) -> str:
    """What identifies the records a run scored: a digest of its record ids (the edit steps of a sequential run;
    failed records count, they were attempted)."""
    ids = sorted(str(x.get("id")) for x in run.samples or [] if isinstance(x, dict) and x.get("kind") != "panel")
    return hashlib.sha256(json.dumps(ids).encode()).hexdigest()[:16]


def floor_key(row: dict) -> tuple:
    """Which null run sets a row's noise floor: same model, task, task hash and the same records (by their ids:
    the whole split, or the same fixed subset)."""
    return (row["model"], row["task"], row["task_hash"], row["records_digest"])


def noise_floors(rows: list[dict]) -> dict[tuple, dict]:
    """The complete (unflagged) ``null`` run of each :func:`floor_key`: its ΔU and the half-width of its 95% CI.
    With several, the latest."""
    floors: dict[tuple, dict] = {}
    for row in sorted(rows, key=lambda r: r["created"]):
        d = row["delta_u"]
        if row["editor"] == "null" and not row["flags"] and d["value"] is not None:
            half = (d["ci_high"] - d["ci_low"]) / 2 if d["ci_low"] is not None and d["ci_high"] is not None else 0.0
            floors[floor_key(row)] = {"delta_u": d["value"], "half_width": half}
    return floors


def classify(row: dict, floors: dict[tuple, dict]) -> None:
    """Set a row's status and, for a ranked row, ``excess``: how far its ΔU lies from the null run's ΔU beyond
    the null run's own sampling noise, ``max(0, |ΔU - ΔU_null| - h_null)``, whichever way ΔU moved (an editor
    that collapses every answer to one string lowers U as surely as an unstable one raises it)."""
    d, reliability = row["delta_u"]["value"], row["reliability"]["value"]
    floor = floors.get(floor_key(row))
    on = f"the first {row['subset']} records" if row["subset"] is not None else "the whole split"
    if row["flags"]:
        row["status"], row["status_note"] = "partial", "; ".join(row["flags"])
    elif row["editor"] in CONTROLS:
        row["status"] = "control"
        row["status_note"] = ("sets the noise floor" if row["editor"] == "null"
                              else "no edit, same random numbers: ΔU must be 0")
    elif reliability is None or reliability < EDIT_TAKES:
        row["status"] = "did_not_take"
        row["status_note"] = f"Edit Success {_fmt(reliability)} is below {EDIT_TAKES}"
    elif floor is None or d is None:
        row["status"] = "no_floor"
        row["status_note"] = (f"no complete null run of this model and task on the same records ({on}) to set "
                              "the noise floor")
    else:
        row["status"], row["ranked"] = "ranked", True
        row["excess"] = max(0.0, abs(d - floor["delta_u"]) - floor["half_width"])
        row["distance"] = abs(d - floor["delta_u"])
        row["status_note"] = (f"|ΔU − ΔU_null| = {_fmt(row['distance'])} against the null run's "
                              f"{_signed(floor['delta_u'])} ± {_fmt(floor['half_width'])}"
                              + (f" (fixed subset: {on})" if row["subset"] is not None else ""))


_STATUS_ORDER = ("ranked", "no_floor", "did_not_take", "control", "partial")


def _order(row: dict) -> tuple:
    """Ranked runs first, by excess over the noise floor (then distance, then higher Edit Success), whatever their
    model; the rest grouped by status, then by model, each by ΔU."""
    d, r = row["delta_u"]["value"], row["reliability"]["value"]
    return (_STATUS_ORDER.index(row["status"]), row["excess"] if row["excess"] is not None else 0.0,
            row.get("distance", 0.0), "" if row["ranked"] else row["model"], d is None, d if d is not None else 0.0,
            -(r if r is not None else -1.0), row["model"], row["editor"])


def rank_rows(rows: list[dict]) -> list[dict]:
    """Classify every row (see :func:`classify`) and number the ranked ones, per model and task together."""
    floors = noise_floors(rows)
    for row in rows:
        classify(row, floors)
    rows = sorted(rows, key=_order)
    rank = 0
    for row in rows:
        if row["ranked"]:
            rank += 1
            row["rank"] = rank
    return rows


def flat_row(row: dict) -> dict:
    """A row as CSV/JSON download fields."""
    out = {k: row[k] for k in ("rank", "status", "excess", "model", "model_revision", "editor", "task",
                               "task_version", "task_hash", "u_pre", "u_post", "records", "subset", "ok", "failed",
                               "date", "ranked", "page")}
    for key in ("reliability", "adoption", "locality", "portability", "fluency", "delta_u"):
        est = row[key]
        out.update({key: est["value"], f"{key}_ci_low": est["ci_low"], f"{key}_ci_high": est["ci_high"]})
    out["flags"] = "; ".join(row["flags"])
    return {k: out[k] for k in TABLE_FIELDS}


def _csv_cell(value):
    # A cell starting with = + - @ is a formula to a spreadsheet; quote text (never numbers) that does.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return "" if value is None else value


def to_csv(rows: list[dict], fields: tuple[str, ...] | list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_cell(row.get(k)) for k in fields})
    return buf.getvalue()


def _json(obj) -> str:
    return json.dumps(obj, indent=1, ensure_ascii=False, allow_nan=False) + "\n"


# --------------------------------------------------------------------------- run pages

def run_tables(doc: dict) -> dict[str, list[dict]]:
    """The tables of a run page, each a list of flat rows (also the page's CSV/JSON downloads)."""
    def est(table: str, name: str, node: dict, stat: str = "value") -> dict:
        node = _estimate(node)
        return {"table": table, "name": name, "statistic": stat, "value": node["value"],
                "ci_low": node["ci_low"], "ci_high": node["ci_high"], "n": None}

    tables: dict[str, list[dict]] = {"metrics": [est("metrics", k, v) for k, v in doc["metrics"].items()]}
    tables["adoption"] = [est("adoption", k, v) for k, v in doc["adoption"].items()]
    tables["uncertainty"] = [{**est("uncertainty", k, v.get(stat), stat), "n": v.get("n")}
                             for k, v in doc["uncertainty"].items()
                             for stat in ("u_pre", "u_post", "delta_u", "delta_u_mean", "delta_u_median", "abs_diff")]
    for group in ("topic", "level", "adoption"):
        tables[f"by_{group}"] = [{**est(f"by_{group}", k, v.get(stat), stat), "n": v.get("n")}
                                 for k, v in doc["breakdowns"].get(group, {}).items()
                                 for stat in ("u_pre", "u_post", "delta_u", "delta_u_mean", "delta_u_median", "abs_diff")]
    return tables


def summary_rows(doc_section: dict) -> list[dict]:
    """Delta summaries as one row each (for the page): name, n, u_pre, u_post, ΔU, mean ΔU, abs diff."""
    return [{"name": k, "n": v.get("n"), **{s: _estimate(v.get(s)) for s in
                                           ("u_pre", "u_post", "delta_u", "delta_u_mean", "delta_u_median", "abs_diff")}}
            for k, v in doc_section.items()]


def examples(samples: list[dict], levels: list[int], n: int = N_EXAMPLES) -> list[dict]:
    """The first sampled answer per paraphrase level, before and after the edit, of the first ok records."""
    out = []
    for line in sorted((x for x in samples if x.get("status") == "ok"), key=lambda x: x.get("position", 0))[:n]:
        pre, post = line["pre"].get("responses") or [], line["post"].get("responses") or []
        rows = [{"level": lvl, "before": _first(pre, j), "after": _first(post, j)} for j, lvl in enumerate(levels)]
        out.append({"id": line["id"], "topic": line.get("topic"), "U_pre": line["pre"].get("U"),
                    "U_post": line["post"].get("U"), "rows": rows})
    return out


def _first(responses: list, j: int) -> str:
    try:
        value = responses[j][0]
    except (IndexError, TypeError, KeyError):
        return ""
    return value if isinstance(value, str) else json.dumps(value)


# --------------------------------------------------------------------------- the submit page

def render_markdown(text: str) -> str:
    """Markdown to HTML: raw HTML in the source is escaped; relative links (files of the repository,
    absent from the site) keep their text and lose the link."""
    try:
        from markdown_it import MarkdownIt
    except ImportError:  # the page still says everything, as preformatted text
        from markupsafe import escape

        return f"<pre>{escape(text)}</pre>"
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = md.parse(text)
    for token in tokens:
        if token.type != "inline" or not token.children:
            continue
        kept, dropped = [], []
        for child in token.children:
            if child.type == "link_open":
                href = child.attrGet("href") or ""
                drop = not re.match(r"^(https?:|mailto:|#)", str(href))
                dropped.append(drop)
                if drop:
                    continue
            elif child.type == "link_close" and dropped:
                if dropped.pop():
                    continue
            kept.append(child)
        token.children = kept
    return md.renderer.render(tokens, md.options, {})


def guide_markdown(guide=None) -> tuple[str, str]:
    """(markdown, where it came from) of the how-to-submit page: the guide's text below its title line.
    ``guide`` is a path; by default the packaged ``leaderboard/SUBMITTING.md``."""
    resource = leaderboard_dir() / GUIDE if guide is None else Path(guide)
    text = resource.read_text(encoding="utf-8")
    body = re.sub(r"\A\s*#\s[^\n]*\n", "", text, count=1).strip()
    if not body:
        raise SiteError(f"{resource}: the submission guide is empty")
    return body, f"leaderboard/{GUIDE}" if guide is None else Path(guide).name


def board_rows(runs: list[Run]) -> dict[str, list[dict]]:
    """The overview's rows of accepted runs, ranked, per task in the site's order."""
    rows = [run_row(r) for r in runs]
    tasks = sorted({r["task"] for r in rows}, key=task_sort_key)
    return {task: rank_rows([r for r in rows if r["task"] == task]) for task in tasks}


def _pct(node: dict) -> str:
    if node["value"] is None:
        return "—"
    ci = (f" [{100 * node['ci_low']:+.1f}, {100 * node['ci_high']:+.1f}]"
          if node["ci_low"] is not None and node["ci_high"] is not None else "")
    return f"{100 * node['value']:+.1f}%{ci}"


def markdown_board(by_task: dict[str, list[dict]]) -> str:
    """The board as one Markdown table (what ``editprobe leaderboard table`` prints): every accepted run, in the
    site's order within each task; rank, or why the run is not ranked."""
    head = ("| task | model | editor | rank | records | Edit Succ. | adoption | Locality | ΔU (95% CI) |\n"
            "|---|---|---|---|--:|--:|--:|--:|---|\n")
    lines = []
    for task, rows in by_task.items():
        for r in rows:
            status = str(r["rank"]) if r["ranked"] else STATUS_TEXT[r["status"]]
            records = f"first {r['subset']}" if r["subset"] is not None else f"{r['records']}"
            editor = r["editor"].replace("|", "\\|")
            lines.append(f"| {task} | {r['model']} | {editor} | {status} | {records} "
                         f"| {_fmt(r['reliability']['value'])} | {_fmt(r['adoption']['value'])} "
                         f"| {_fmt(r['locality']['value'])} | {_pct(r['delta_u'])} |")
    return head + "\n".join(lines) + ("\n" if lines else "")


# --------------------------------------------------------------------------- rendering

def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _signed(value, digits: int = 3) -> str:
    return "—" if value is None else f"{value:+.{digits}f}"


def _ci(node, digits: int = 3) -> str:
    node = _estimate(node)
    if node["ci_low"] is None or node["ci_high"] is None:
        return ""
    return f"[{node['ci_low']:.{digits}f}, {node['ci_high']:.{digits}f}]"


def _sortval(value) -> str:
    return "" if value is None else repr(float(value))


def environment() -> Environment:
    env = Environment(loader=PackageLoader("editprobe.leaderboard", "templates"), autoescape=select_autoescape(default=True),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(num=_fmt, signed=_signed, ci=_ci, sortval=_sortval,
                       pretty=lambda obj: json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=True))
    return env


@dataclass
class TaskSection:
    name: str
    known: KnownTask | None
    rows: list[dict]
    models: list[str]
    editors: list[str]
    scatter: str
    heatmap: str
    levels: str
    sequential: str = ""   # ΔU against the number of edits, when the task's runs are sequential


def assign_slugs(runs: list[Run], submissions: Path | None) -> None:
    seen: set[str] = set()
    for run in runs:
        try:
            parts = run.path.parent.resolve().relative_to(Path(submissions).resolve()).parts if submissions else ()
        except ValueError:
            parts = ()
        base = "--".join(parts) or run.path.parent.name or "run"
        slug, i = base, 2
        while slug in seen:
            slug, i = f"{base}-{i}", i + 1
        seen.add(slug)
        run.slug = slug


def _label(row: dict, models: list[str]) -> str:
    return row["editor"] if len(models) <= 1 else f"{row['editor']} · {row['model']}"


def _figures(section_rows: list[dict], runs_by_slug: dict[str, Run], task: str, known: KnownTask | None,
             models: list[str], out: Path) -> tuple[str, ...]:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", task)
    names = (f"plots/{stem}-scatter.svg", f"plots/{stem}-topics.svg", f"plots/{stem}-levels.svg")
    plots.scatter([{"label": _label(r, models), "x": r["reliability"]["value"], "y": r["delta_u"]["value"],
                    "y_low": r["delta_u"]["ci_low"], "y_high": r["delta_u"]["ci_high"], "ranked": r["ranked"]}
                   for r in section_rows], out / names[0], f"{task}: Edit Success vs ΔU")
    topics = list(load_topics())
    heat_rows, heat_values = [], []
    for r in section_rows:
        by_topic = runs_by_slug[r["slug"]].doc["breakdowns"]["topic"]
        heat_rows.append(_label(r, models))
        heat_values.append([_estimate(by_topic.get(t, {}).get("delta_u"))["value"] for t in topics])
    plots.topic_heatmap(heat_rows, topics, heat_values, out / names[1], f"{task}: ΔU per topic")
    levels = [int(x) for x in (known.spec["uncertainty"]["levels"] if known else range(1, 7))]
    curves = []
    for r in section_rows:
        by_level = runs_by_slug[r["slug"]].doc["breakdowns"]["level"]
        curves.append({"label": _label(r, models), "ranked": r["ranked"],
                       "values": [_estimate(by_level.get(str(lvl), {}).get("delta_u"))["value"] for lvl in levels]})
    plots.level_curves(curves, levels, out / names[2], f"{task}: ΔU per paraphrase level")
    chains = [{"label": _label(r, models), "sequential": runs_by_slug[r["slug"]].doc["sequential"]}
              for r in section_rows if runs_by_slug[r["slug"]].doc.get("sequential")]
    if not chains:
        return (*names, "")
    sequential = f"plots/{stem}-sequential.svg"
    plots.sequential_curves(chains, out / sequential, f"{task}: ΔU against the number of edits")
    return (*names, sequential)


def render_site(runs: list[Run], out: Path, *, known: dict[str, KnownTask] | None = None,
                submissions: Path | None = None, guide: Path | None = None) -> list[Path]:
    """Write the site for accepted ``runs`` into ``out`` (replacing an earlier build); returns the pages."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (out / MARKER).exists():
        raise SiteError(f"{out}: refusing to replace a folder that is not an editprobe site (no {MARKER} in it)")
    known = load_known_tasks() if known is None else known
    stage = out.parent / f".{out.name}.building"
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    assign_slugs(runs, submissions)
    env = environment()
    by_slug = {r.slug: r for r in runs}
    ranked = board_rows(runs)
    task_names = sorted({*known, *ranked}, key=task_sort_key)
    sections, pages = [], []
    for task in task_names:
        task_rows = ranked.get(task, [])
        models = sorted({r["model"] for r in task_rows})
        names = _figures(task_rows, by_slug, task, known.get(task), models, stage) if task_rows else ("", "", "", "")
        sections.append(TaskSection(task, known.get(task), task_rows, models,
                                    sorted({r["editor"] for r in task_rows}), *names))
        flat = [flat_row(r) for r in task_rows]
        _write(stage / "data" / f"{task}.csv", to_csv(flat, TABLE_FIELDS))
        _write(stage / "data" / f"{task}.json", _json({"task": task, "runs": flat}))
    all_flat = [flat_row(r) for s in sections for r in s.rows]
    _write(stage / "data" / "all_runs.csv", to_csv(all_flat, TABLE_FIELDS))
    _write(stage / "data" / "all_runs.json", _json({"runs": all_flat}))
    common = {"version": __version__, "n_runs": len(runs), "metric_columns": METRIC_COLUMNS,
              "edit_takes": EDIT_TAKES, "min_subset": MIN_SUBSET_RECORDS, "status_text": STATUS_TEXT}
    _write(stage / "index.html", env.get_template("index.html").render(root="", sections=sections, **common))
    pages.append(out / "index.html")
    markdown, source = guide_markdown(guide)
    _write(stage / "submit.html", env.get_template("submit.html").render(
        root="", body=render_markdown(markdown), source=source, **common))
    pages.append(out / "submit.html")
    classified = {r["slug"]: r for task_rows in ranked.values() for r in task_rows}
    for run in runs:
        pages.append(out / _run_page(run, env, stage, known, common, classified[run.slug]))
    for asset in (leaderboard_dir() / "static").iterdir():
        if asset.is_file() and not asset.name.endswith(".md"):
            (stage / "static").mkdir(exist_ok=True)
            (stage / "static" / asset.name).write_bytes(asset.read_bytes())
    (stage / MARKER).write_text(f"built by editprobe {__version__}\n")
    if out.exists():
        shutil.rmtree(out)
    stage.rename(out)
    return pages


def _run_page(run: Run, env: Environment, stage: Path, known: dict[str, KnownTask], common: dict, row: dict) -> str:
    doc = run.doc
    folder = stage / "runs" / run.slug
    task = known.get(doc["provenance"]["task"]["name"])
    levels = [int(x) for x in (task.spec["uncertainty"]["levels"] if task else sorted(
        doc["breakdowns"]["level"], key=int))]
    tables = run_tables(doc)
    flat = [row for rows in tables.values() for row in rows]
    fields = ("table", "name", "statistic", "value", "ci_low", "ci_high", "n")
    _write(folder / "tables.csv", to_csv(flat, fields))
    _write(folder / "tables.json", _json({"run": run.slug, "tables": tables}))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_bytes(run.path.read_bytes())
    (folder / SAMPLES).write_bytes(run.samples_path.read_bytes() if run.samples_path.suffix == ".gz"
                                   else gzip_bytes(run.samples_bytes))
    failed = [{"id": x.get("id"), "error": x.get("error", "")} for x in run.samples if x.get("status") == "failed"]
    page = env.get_template("run.html").render(
        root="../../", run=run, doc=doc, p=doc["provenance"], row=row, flags=run.flags,
        uncertainty=summary_rows(doc["uncertainty"]),
        breakdowns={g: summary_rows(doc["breakdowns"].get(g, {})) for g in ("topic", "level", "adoption")},
        examples=examples(run.samples, levels), failed=failed, **common)
    _write(folder / "index.html", page)
    return f"runs/{run.slug}/index.html"


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def build(submissions: Path, out: Path, *, skip_invalid: bool = False, guide: Path | None = None,
          tasks_dir: Path | None = None) -> tuple[Report, list[Path]]:
    """Validate the submissions folder and render the site from the accepted runs.

    With rejections the site is not written unless ``skip_invalid`` (then it shows the accepted runs only).
    """
    known = load_known_tasks(tasks_dir) if tasks_dir else load_known_tasks()
    report = validate_folder(submissions, known=known)
    if report.rejected and not skip_invalid:
        return report, []
    return report, render_site(report.accepted, out, known=known, submissions=submissions, guide=guide)
