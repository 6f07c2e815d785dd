"""Content-addressed on-disk cache of LLM calls.

Key: sha256 of the canonical JSON of ``(backend, model, messages, parameters)``. Entry:
``<cache>/<key[:2]>/<key>.json`` holding only the response text and its token counts, never the
messages: prompts quote third-party source records, which must not end up in a committed folder.

Every entry is written to a temporary file in the same folder and renamed into place, so a process
killed at any moment leaves either a complete entry or none; a rebuild after a kill therefore never
repeats a call whose answer was received, and an identical second build makes no call at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

ENTRY_FIELDS = ("text", "tokens_in", "tokens_out")


def canonical_json(obj: Any) -> str:
    """Sorted keys, no whitespace, non-ASCII kept: the same request always gives the same bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def cache_key(backend: str, model: str, messages: list[dict], parameters: dict) -> str:
    payload = {"backend": backend, "model": model, "messages": messages, "parameters": parameters}
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


class LLMCache:
    """``get``/``put`` by key; a missing, truncated or foreign file reads as a miss.

    ``read_only`` folders (paths or package resources, e.g. the release recipe's committed cache inside a
    read-only site-packages) are consulted after ``root``; every new entry is written to ``root`` only.
    """

    def __init__(self, root: Path | str, read_only: tuple = ()):
        self.root = Path(root)
        self.read_only = tuple(read_only)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        for folder in (self.root, *self.read_only):
            entry = _read_entry(folder.joinpath(key[:2], f"{key}.json"))
            if entry is not None:
                return entry
        return None

    def put(self, key: str, text: str, tokens_in: int, tokens_out: int) -> Path:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{key[:8]}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(json.dumps({"text": text, "tokens_in": int(tokens_in), "tokens_out": int(tokens_out)},
                                    ensure_ascii=False))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def __len__(self) -> int:
        """Entries written to ``root`` (the read-only layers are not counted)."""
        return sum(1 for _ in self.root.glob("??/*.json")) if self.root.exists() else 0


def _read_entry(file) -> dict | None:
    try:
        entry = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("text"), str):
        return None
    return {k: entry.get(k) for k in ENTRY_FIELDS}
