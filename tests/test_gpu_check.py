"""benchmarks/gpu_check.py cannot rot: its CPU mode (a 2-layer random LLaMA) runs the same path as the GPU run."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"


def test_gpu_check_tiny_mode_scores_every_editor_without_failures(tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPT), "--tiny"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    out = result.stdout
    for editor in ("noop", "rome", "memit", "alphaedit"):
        assert re.search(rf"^{editor} +failed 0/2 +edit +[0-9.]+ s/record", out, re.M), out
    assert re.search(r"^multi-edit: B=4, post-edit measurement one at a time [0-9]+ edits/h, batched [0-9]+ edits/h: "
                     r"[0-9.]+x; same samples for [0-4] of 4 records$", out, re.M), out
    assert re.search(r"^targets: B=4 ROME v\*, one at a time [0-9.]+ s/target, batched [0-9.]+ s/target: [0-9.]+x; "
                     r"same steps for [0-4] of 4, largest relative gap [0-9.e+-]+$", out, re.M), out
    assert re.search(r"^sampling: [0-9]+ tokens/s at 30 rows", out, re.M)
    assert re.search(r"^decode step: [0-9.]+ ms", out, re.M)
    assert "imports beyond torch/transformers/numpy: none of datasets, sentence_transformers, jsonschema" in out
    assert out.rstrip().endswith("failed records: 0")
