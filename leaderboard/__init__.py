"""leaderboard: validate results files and render a static site.

Reads results files only; never imports ``benchmark``.

* :mod:`editprobe.leaderboard.submissions` — the submissions folder layout, reading a run;
* :mod:`editprobe.leaderboard.known_tasks` — the task versions and hashes a run may report (from tasks/*.yaml);
* :mod:`editprobe.leaderboard.aggregates` — every aggregate recomputed from the per-sample log;
* :mod:`editprobe.leaderboard.validation` — accept or reject runs, one line per rejection; flags, duplicates;
* :mod:`editprobe.leaderboard.submit` — file a validated run into the submissions folder;
* :mod:`editprobe.leaderboard.site`, :mod:`editprobe.leaderboard.plots` — the static site and its SVG figures;
* :mod:`editprobe.leaderboard.cli` — ``editprobe submit`` and ``editprobe leaderboard validate|build``.
"""
