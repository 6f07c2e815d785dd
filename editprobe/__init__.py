"""editprobe: how much does a model edit raise the model's uncertainty under paraphrase perturbations?

The pipelines install under this one name: :mod:`editprobe.dataset_builder`, :mod:`editprobe.benchmark` and
:mod:`editprobe.leaderboard`; their data (tasks, schemas, templates) is package data (:mod:`editprobe.resources`).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

__version__ = "0.1.0"


def git_hash() -> str | None:
    """The commit of the checkout this code runs from (an editable install), for provenance; None when editprobe
    is an installed wheel. Only a repository whose top level holds this package counts, so a site-packages
    inside some other repository reports nothing rather than that repository's commit."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists() or not (root / "benchmark").is_dir():
        return None
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None
