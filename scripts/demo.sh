#!/usr/bin/env bash
# The main job on the embedded default (SmolLM2-135M-Instruct, CPU); run through `make demo`.
#  1. build the sample perturbation set from the real source data (offline; zero model calls when the
#     committed cache covers it) -> build/perturbations, loadable with load_dataset(path, "zsre");
#  2. score the noop control and FT-M on a few ZsRE records and print the comparison table.
set -euo pipefail
EP=.venv/bin/editprobe
DATA="${EDITPROBE_DATA:-../shared/data}"
N="${DEMO_RECORDS:-3}"

$EP build --recipe dataset_builder/release/recipe.yaml --data-dir "$DATA" --out build/perturbations

for editor in noop ft; do
  $EP run --task zsre --editor "$editor" --limit "$N" --output-dir "build/runs/$editor-zsre"
done
echo
$EP compare build/runs/noop-zsre build/runs/ft-zsre
