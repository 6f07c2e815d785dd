"""The submissions folder: ``<model>/<editor>/<task>/`` holding ``results.json`` and ``samples.jsonl.gz``.

Path components are the provenance's model id, editor name and task name, sanitised (:func:`path_component`)
so that any string — a hub id with a slash, an editor called ``<script>`` — gives one safe folder name.
"""

from __future__ import annotations

import gzip
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

#: Where the CLI looks when ``--submissions`` is not given: the committed folder, from a checkout's top.
DEFAULT_SUBMISSIONS = Path("leaderboard") / "submissions"
RESULTS = "results.json"
SAMPLES = "samples.jsonl.gz"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def path_component(name: str, limit: int = 80) -> str:
    """A folder name from any string: "/" becomes "__", other runs of unsafe characters "_".

    "HuggingFaceTB/SmolLM2-135M" -> "HuggingFaceTB__SmolLM2-135M"; "<script>" -> "_script_";
    never empty, never "." or "..", never hidden (a leading dot becomes "_").
    """
    out = _UNSAFE.sub("_", str(name).replace("/", "__")).strip()[:limit]
    if out.startswith("."):
        out = "_" + out[1:]
    return out if out.strip("._") else "_"


def submission_parts(doc: dict) -> tuple[str, str, str]:
    """(model, editor, task) folder names of a results document."""
    p = doc["provenance"]
    return path_component(p["model"]["id"]), path_component(p["editor"]["name"]), path_component(p["task"]["name"])


@dataclass
class Run:
    """One results file and its samples, as read from disk (``doc`` is None when unreadable)."""
    path: Path                         # the results.json
    samples_path: Path | None
    doc: dict | None = None
    samples: list[dict] | None = None
    samples_bytes: bytes | None = None  # decompressed samples.jsonl
    read_error: str | None = None
    flags: list[str] = field(default_factory=list)
    slug: str = ""

    @property
    def where(self) -> str:
        return str(self.path)


def _samples_file(folder: Path) -> Path | None:
    for name in (SAMPLES, "samples.jsonl"):
        if (folder / name).exists():
            return folder / name
    return None


def read_samples_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if path.suffix == ".gz" else data


def parse_samples(data: bytes) -> list[dict]:
    lines = []
    for i, raw in enumerate(data.decode("utf-8").splitlines()):
        if raw.strip():
            try:
                lines.append(json.loads(raw))
            except json.JSONDecodeError as exc:
                raise ValueError(f"line {i + 1} is not JSON ({exc.msg})") from None
    return lines


def read_run(results_path: Path) -> Run:
    """Read a results.json and the samples file beside it; a failure is recorded, never raised."""
    results_path = Path(results_path)
    run = Run(path=results_path, samples_path=_samples_file(results_path.parent))
    try:
        run.doc = json.loads(results_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        run.read_error = f"results.json is not readable JSON ({exc})"
        return run
    if run.samples_path is None:
        run.read_error = f"no {SAMPLES} beside results.json"
        return run
    try:
        run.samples_bytes = read_samples_bytes(run.samples_path)
        run.samples = parse_samples(run.samples_bytes)
    except (OSError, EOFError, gzip.BadGzipFile, UnicodeDecodeError, ValueError) as exc:
        run.read_error = f"{run.samples_path.name}: {exc}"
    return run


def discover(submissions: Path) -> list[Run]:
    """Every results.json under the submissions folder, in path order (hidden folders, e.g. the staging
    folder of an interrupted ``submit``, are skipped)."""
    root = Path(submissions)
    return [read_run(p) for p in sorted(root.rglob(RESULTS))
            if not any(part.startswith(".") for part in p.relative_to(root).parts)]


def gzip_bytes(data: bytes) -> bytes:
    """Deterministic gzip (no file name, mtime 0): the same samples always give the same file."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", filename="", mtime=0, compresslevel=9) as fh:
        fh.write(data)
    return buf.getvalue()


def samples_fingerprint(lines: list[dict]) -> str:
    """sha256 of the samples' content, ignoring timings, independent of line order and formatting."""
    import hashlib

    clean = sorted((json.dumps({k: v for k, v in x.items() if k != "seconds"}, sort_keys=True)
                    for x in lines if isinstance(x, dict)))
    return hashlib.sha256("\n".join(clean).encode()).hexdigest()
