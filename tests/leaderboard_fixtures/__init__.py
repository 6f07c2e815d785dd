"""Leaderboard fixtures: two real runs and the hand-made variants the tests derive from them.

``zsre-noop/`` and ``zsre-ft/`` are the outputs of the project's runner (see README.md here), with
``samples.jsonl`` gzip-compressed. Bad and extra runs are derived at test time (:func:`derive`):
a derived run's samples are edited by hand, then its aggregates are recomputed so the run is
consistent; tests check the leaderboard against numbers they compute themselves.
"""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path

from editprobe.leaderboard.aggregates import recompute
from editprobe.leaderboard.known_tasks import load_known_tasks
from editprobe.leaderboard.submissions import gzip_bytes, submission_parts
from editprobe.leaderboard.validation import settings_for

FIXTURES = Path(__file__).resolve().parent
TASKS = FIXTURES / "tasks"   # tasks/zsre.yaml as it was when the fixtures were made
HOSTILE = "<script>alert(1)</script>"
_SCALED = ("U", "U_alea", "U_epis")


def load(name: str) -> tuple[dict, list[dict]]:
    """(results document, samples lines) of a committed fixture: "zsre-noop" or "zsre-ft"."""
    folder = FIXTURES / name
    doc = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    lines = [json.loads(x) for x in gzip.decompress((folder / "samples.jsonl.gz").read_bytes()).decode().splitlines()
             if x.strip()]
    return doc, lines


def write_run(folder: Path, doc: dict, lines: list[dict]) -> Path:
    """A run folder as `editprobe run` leaves it, samples compressed (what the submissions folder holds)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False), encoding="utf-8")
    data = "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines).encode()
    (folder / "samples.jsonl.gz").write_bytes(gzip_bytes(data))
    return folder


def file_run(submissions: Path, doc: dict, lines: list[dict]) -> Path:
    """Write a run straight into a submissions folder under <model>/<editor>/<task>/."""
    return write_run(submissions.joinpath(*submission_parts(doc)), doc, lines)


def derive(doc: dict, lines: list[dict], *, editor: str | None = None, post_scale: float = 1.0,
           limit: int | None | str = "keep", fail: tuple[str, ...] = (), created: str | None = None,
           hparams: dict | None = None) -> tuple[dict, list[dict]]:
    """A consistent variant of a run: post-edit U, U_alea, U_epis and U_level multiplied by ``post_scale``,
    the records in ``fail`` turned into failures, provenance fields replaced; aggregates recomputed."""
    doc, lines = copy.deepcopy(doc), copy.deepcopy(lines)
    for line in lines:
        if line["id"] in fail:
            for key in ("pre", "post", "edit", "seconds"):
                line.pop(key, None)
            line.update(status="failed", error="RuntimeError: injected failure")
        elif line["status"] == "ok":
            for key in _SCALED:
                line["post"][key] *= post_scale
            line["post"]["U_level"] = [u * post_scale for u in line["post"]["U_level"]]
    p = doc["provenance"]
    if editor is not None:
        p["editor"]["name"] = editor
    if hparams is not None:
        p["editor"]["hparams"] = hparams
    if limit != "keep":
        p["limit"] = limit
    if created is not None:
        p["created"] = created
    task = load_known_tasks(TASKS)[p["task"]["name"]]
    doc.update(json.loads(json.dumps(recompute(lines, settings_for(doc, task)))))
    return doc, lines


def ok_lines(lines: list[dict]) -> list[dict]:
    return sorted((x for x in lines if x["status"] == "ok"), key=lambda x: x["position"])


def ratio_of_means(lines: list[dict]) -> float:
    """ΔU by hand: mean U_post / mean U_pre - 1 (no floor needed: these U_pre are ~0.5)."""
    ok = ok_lines(lines)
    return sum(x["post"]["U"] for x in ok) / sum(x["pre"]["U"] for x in ok) - 1


def site_runs() -> dict[str, tuple[dict, list[dict]]]:
    """The runs of the site tests, by editor name: the two real runs (--limit 2, so not ranked) and
    four full-run variants: ``null`` (the noise floor, ΔU +2%), ``ft-a`` and ``ft-b`` (Edit Success 1.0), and one
    with a hostile editor name and hostile hyper-parameters (a noop's Edit Success 0.25: its edit did not take)."""
    noop, noop_lines = load("zsre-noop")
    ft, ft_lines = load("zsre-ft")
    return {
        "noop": (noop, noop_lines),
        "ft": (ft, ft_lines),
        "null": derive(noop, noop_lines, editor="null", post_scale=1.02, limit=None),
        "ft-a": derive(ft, ft_lines, editor="ft-a", post_scale=1.5, limit=None, hparams={"lr": 0.01}),
        "ft-b": derive(ft, ft_lines, editor="ft-b", post_scale=0.9, limit=None, hparams={"lr": 0.001}),
        HOSTILE: derive(noop, noop_lines, editor=HOSTILE, post_scale=1.2, limit=None,
                        hparams={"note": "</pre><script>alert(3)</script>"}),
    }


def build_fixture_site(root: Path):
    """File every site run under root/sub and build root/site; returns (site folder, runs, pages)."""
    from editprobe.leaderboard.site import build

    runs = site_runs()
    for doc, lines in runs.values():
        file_run(root / "sub", doc, lines)
    report, pages = build(root / "sub", root / "site", tasks_dir=TASKS)
    assert report.ok, [str(r) for r in report.rejected]
    return root / "site", runs, pages
