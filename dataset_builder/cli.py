"""CLI of the dataset builder: ``editprobe convert`` and ``editprobe build``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click


@click.command()
@click.argument("source_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the canonical records (JSON Lines).")
@click.option("--format", "fmt", default=None,
              help="Source format; detected from the records when omitted. One of: knowedit_zsre, mend_zsre, "
                   "knowedit_wiki_recent, knowedit_wiki_counterfact, easyedit_counterfact.")
def convert(source_file: Path, out: Path, fmt: str | None) -> None:
    """Convert a real editing-benchmark file into canonical source records.

    Every record that cannot be read gets one error line (file, record index, field) on stderr; the
    rest of the file is still converted. Exits 1 only when nothing could be converted.

    \b
    Example:
      editprobe convert ../shared/data/knowedit/zsre_test.json --out build/zsre.records.jsonl
    """
    from dataset_builder.sources import FORMATS, SourceFileError, convert_file

    if fmt is not None and fmt not in FORMATS:
        raise click.BadParameter(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}", param_hint="--format")
    try:
        result = convert_file(source_file, fmt)
    except (SourceFileError, OSError, UnicodeDecodeError) as exc:
        raise click.ClickException(str(exc)) from None
    for error in result.errors:
        click.echo(f"error: {error}", err=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as fh:
        for record in result.records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    click.echo(f"{result.summary()} -> {out}")
    if not result.records:
        sys.exit(1)
