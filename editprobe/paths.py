"""Where the project's declarative files live, and where the real source data is read from."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SCHEMAS_DIR = REPO_ROOT / "schemas"
TASKS_DIR = REPO_ROOT / "tasks"

#: Environment variable naming the folder of real source data (KnowEdit files, format samples).
DATA_ENV = "EDITPROBE_DATA"


def default_data_dir() -> Path:
    """The source-data folder: $EDITPROBE_DATA, else ``../shared/data`` beside the repository.

    Read once, at the CLI or test boundary; library functions take the folder as an argument.
    """
    value = os.environ.get(DATA_ENV)
    if value:
        path = Path(value)
        return path if path.is_absolute() else (Path.cwd() / path).resolve()
    return (REPO_ROOT.parent / "shared" / "data").resolve()
