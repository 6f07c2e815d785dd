"""leaderboard: validate results files and render a static site.

Reads results files only; never imports ``benchmark``.

* :mod:`leaderboard.submissions` — the submissions folder layout, reading a run;
* :mod:`leaderboard.known_tasks` — the task versions and hashes a run may report (from tasks/*.yaml);
* :mod:`leaderboard.aggregates` — every aggregate recomputed from the per-sample log;
* :mod:`leaderboard.validation` — accept or reject runs, one line per rejection; flags, duplicates;
* :mod:`leaderboard.submit` — file a validated run into the submissions folder;
* :mod:`leaderboard.site`, :mod:`leaderboard.plots` — the static site and its SVG figures;
* :mod:`leaderboard.cli` — ``editprobe submit`` and ``editprobe leaderboard validate|build``.
"""
