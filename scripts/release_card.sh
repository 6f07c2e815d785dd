#!/usr/bin/env bash
# Rebuild the released perturbation set and copy its card, figure and build report to docs/perturbation_set/
# (what the README links; tests/test_build.py checks the committed card against a fresh build). Offline:
# everything comes from the committed files and cache. Run through `make release-card`.
set -euo pipefail
EP=.venv/bin/editprobe
DATA="${EDITPROBE_DATA:-../shared/data}"
OUT=build/release-card
rm -rf "$OUT"
$EP build --recipe release --data-dir "$DATA" --out "$OUT" --quiet
mkdir -p docs/perturbation_set
cp "$OUT/README.md" "$OUT/paraphrase_stats.png" docs/perturbation_set/
# the report without this machine's paths
.venv/bin/python - "$OUT/build_report.json" docs/perturbation_set/build_report.json <<'PY'
import json, os, sys
report = json.load(open(sys.argv[1], encoding="utf-8"))
home = os.path.expanduser("~")
def tidy(value):
    if isinstance(value, str):
        return value.replace(os.getcwd() + "/", "").replace(home, "~")
    if isinstance(value, list):
        return [tidy(v) for v in value]
    if isinstance(value, dict):
        return {k: tidy(v) for k, v in value.items()}
    return value
report["settings"] = tidy(report["settings"])
with open(sys.argv[2], "w", encoding="utf-8") as fh:
    json.dump(report, fh, indent=1, ensure_ascii=False)
    fh.write("\n")
PY
echo "card, figure and report -> docs/perturbation_set/"
