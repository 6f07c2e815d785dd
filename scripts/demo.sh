#!/usr/bin/env bash
# The main job on the embedded default (SmolLM2-135M-Instruct, CPU); run through `make demo`.
#  1. build the zsre config of the released perturbation set (the one it scores; `editprobe build --recipe
#     release --out build/perturbations` builds all six) from the real source data (offline; zero model calls when the
#     committed cache covers it) -> build/perturbations, loadable with load_dataset(path, "zsre");
#  2. score the null control (the sampling-noise floor) and FT-M on a few ZsRE records (zsre-fast: 32 new
#     tokens) and print the comparison table;
#  3. submit both runs to a scratch leaderboard and build the static site (build/site/index.html).
set -euo pipefail
EP=.venv/bin/editprobe
DATA="${EDITPROBE_DATA:-../shared/data}"
N="${DEMO_RECORDS:-3}"

$EP build --recipe release --configs zsre --data-dir "$DATA" --out build/perturbations

for editor in null ft; do
  $EP run --task zsre-fast --editor "$editor" --limit "$N" --out "build/runs/$editor-zsre"
done
echo
$EP compare build/runs/null-zsre build/runs/ft-zsre

# 3. file both runs into a scratch submissions folder and render the static leaderboard.
#    (--replace: a rerun of the demo writes a new `created` timestamp; demo runs use --limit, so the
#    site shows them marked "not ranked".)
$EP submit build/runs/null-zsre build/runs/ft-zsre --submissions build/submissions --replace
$EP leaderboard build --submissions build/submissions --out build/site
echo
echo "leaderboard: $(pwd)/build/site/index.html"
