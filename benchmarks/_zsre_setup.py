"""What the locate-then-edit speed scripts share: their common options and the embedded model with real ZsRE
records in a diagnostics :class:`~editprobe.benchmark.diagnostics.Context` (the SmolLM2 presets)."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def add_common_options(ap: argparse.ArgumentParser, records: int, editors: str) -> None:
    ap.add_argument("--records", type=int, default=records)
    ap.add_argument("--editors", default=editors)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--data-dir", type=Path, default=None)


def zsre_context(args):
    """``(model, tokenizer, info, ctx)``: the embedded model and the first ``args.records`` ZsRE records."""
    from editprobe.benchmark.diagnostics import Context, load_records
    from editprobe.models import load_model
    from editprobe.paths import default_cache_dir, default_data_dir

    torch.set_num_threads(args.threads)
    model, tokenizer, info = load_model(device=args.device)
    records = load_records(args.data_dir or default_data_dir(), {"limit": args.records})
    return model, tokenizer, info, Context(model, tokenizer, "smollm2-135m", records, default_cache_dir(), {})
