"""Options shared by the subcommands, so each concept has one spelling and one meaning everywhere:

``--out``        where a command writes its result (``--output-dir`` is accepted as a hidden alias);
``--cache-dir``  editprobe's writable cache root ($EDITPROBE_CACHE, default ~/.cache/editprobe): model copies,
                 pre-edit passes, covariance stats, context templates, and LLM calls under ``llm/``;
``--data-dir``   the real source-data folder ($EDITPROBE_DATA, default ../shared/data);
``--model``      a hub id or local folder of a causal LM, default the embedded SmolLM2;
``--dtype``      the weight dtype.
"""

from __future__ import annotations

from pathlib import Path

import click

from editprobe.models import DEFAULT_MODEL, DTYPES
from editprobe.paths import CACHE_ENV, DATA_ENV


class AliasedOption(click.Option):
    """An option whose later spellings still work but are left out of ``--help`` (kept so old scripts run)."""

    def get_help_record(self, ctx):
        opts = self.opts
        try:
            self.opts = opts[:1]
            return super().get_help_record(ctx)
        finally:
            self.opts = opts


def out_option(*, required: bool = True, default: Path | None = None, help: str, file_okay: bool = False):
    kinds = {"file_okay": file_okay, "dir_okay": not file_okay}
    return click.option("--out", "--output-dir", "out", cls=AliasedOption, required=required and default is None,
                        default=default, show_default=default is not None, help=help,
                        type=click.Path(path_type=Path, **kinds))


def cache_dir_option(what: str):
    return click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                        envvar=CACHE_ENV, help=f"editprobe's cache root ({what}) [default: ${CACHE_ENV}, "
                                               "else ~/.cache/editprobe].")


def data_dir_option():
    return click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                        envvar=DATA_ENV, help=f"Source-data folder (KnowEdit files) [default: ${DATA_ENV}, "
                                              "else ../shared/data].")


def model_option(help: str = "Hub id or local folder of a causal LM; the default is the embedded SmolLM2-135M-Instruct."):
    return click.option("--model", default=DEFAULT_MODEL, show_default=True, help=help)


def dtype_option():
    return click.option("--dtype", type=click.Choice(DTYPES), default=DTYPES[0], show_default=True,
                        help="Weight dtype the model is loaded in.")
