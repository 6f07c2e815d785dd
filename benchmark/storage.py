"""What a run keeps on disk: samples.jsonl (one line per finished unit, fsync'd), atomic JSON writes, the folder
claim that stops two runs mixing, and the pre-edit cache. Torch-free, so ``merge`` and the leaderboard use it."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

log = logging.getLogger("editprobe.run")


def jsonable(obj):
    """``obj`` with arrays and tensors as lists (and anything else unknown as its string)."""
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def read_samples(path: Path) -> list[dict]:
    """Lines of a samples.jsonl; a torn last line (killed mid-write) is dropped so the record reruns."""
    if not path.exists():
        return []
    return parse_lines(path.read_text(encoding="utf-8"), path)


def parse_lines(text: str, path: Path) -> list[dict]:
    """The JSON lines of ``text`` (read from ``path``), a torn one dropped with a warning."""
    lines = []
    for raw in text.splitlines():
        try:
            lines.append(json.loads(raw))
        except json.JSONDecodeError:
            log.warning("%s: ignoring a torn line (the record will be scored again)", path)
    return lines


def rewrite_clean(path: Path, lines: list[dict]) -> None:
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8")
    tmp.replace(path)


def append_line(fh, line: dict) -> None:
    """One finished unit, on disk before the next starts (a kill -9 loses at most the unit in progress)."""
    fh.write(json.dumps(line, ensure_ascii=False) + "\n")
    fh.flush()
    os.fsync(fh.fileno())


def claim_output_dir(out: Path, identity: dict) -> None:
    """Resuming is only safe into a folder holding the same run: refuse to mix two runs' records."""
    path = out / "run.json"
    if path.exists():
        previous = json.loads(path.read_text())
        if previous != identity:
            changed = sorted(k for k in identity if previous.get(k) != identity[k])
            raise ValueError(f"{out} holds a different run ({', '.join(changed)} changed); "
                             "choose another --out or delete it")
        return
    write_json(path, identity)


def write_json(path: Path, doc: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)


class PreEditCache:
    """Per-record pre-edit measurements on disk, keyed by everything they depend on."""

    def __init__(self, root: Path, key_parts: dict):
        key = hashlib.sha256(json.dumps(key_parts, sort_keys=True).encode()).hexdigest()[:24]
        self.dir = Path(root) / "pre_edit" / key
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "key.json").write_text(json.dumps(key_parts, indent=1, sort_keys=True))
        self.hits = self.misses = 0

    def _path(self, record_id: str) -> Path:
        return self.dir / f"{record_id}.json"

    def get(self, record_id: str) -> dict | None:
        path = self._path(record_id)
        if path.exists():
            self.hits += 1
            return json.loads(path.read_text())
        self.misses += 1
        return None

    def put(self, record_id: str, value: dict) -> None:
        tmp = self._path(record_id).with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(value))
        tmp.replace(self._path(record_id))
