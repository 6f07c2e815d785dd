"""The user's locations: the real source data and the writable cache. Resolved once, at the CLI or test boundary,
and passed down as arguments; library code never reads these variables itself."""

from __future__ import annotations

import os
from pathlib import Path

#: Environment variable naming the folder of real source data (KnowEdit files, format samples).
DATA_ENV = "EDITPROBE_DATA"
#: Environment variable naming editprobe's writable cache (model copies, pre-edit passes, LLM calls, stats).
CACHE_ENV = "EDITPROBE_CACHE"


def default_data_dir() -> Path:
    """The source-data folder: $EDITPROBE_DATA, else ``../shared/data`` from the current directory (the layout
    of a checkout beside its shared data folder)."""
    value = os.environ.get(DATA_ENV)
    return Path(value).resolve() if value else (Path.cwd() / ".." / "shared" / "data").resolve()


def default_cache_dir() -> Path:
    """$EDITPROBE_CACHE, else ``~/.cache/editprobe``: the one place editprobe writes state of its own."""
    value = os.environ.get(CACHE_ENV)
    return Path(value) if value else Path.home() / ".cache" / "editprobe"


def resolve_data_ref(text: Path | str, data_dir: Path | str | None = None) -> Path:
    """``data:REL`` is REL under the source-data folder (``data_dir``, else :func:`default_data_dir`), so a preset
    can name a file of the data folder (e.g. a training split) without a machine's absolute path; anything else is
    a plain path."""
    text = str(text)
    if text.startswith("data:"):
        return Path(data_dir or default_data_dir()).resolve() / text.removeprefix("data:")
    return Path(text)
