#!/usr/bin/env bash
# The main job on the embedded default; run through `make demo`.
set -euo pipefail
PY=.venv/bin/python
DATA="${EDITPROBE_DATA:-../shared/data}"
mkdir -p build
.venv/bin/editprobe convert "$DATA/knowedit/zsre_test.json" --out build/zsre.records.jsonl
