import os

# Tests never reach a hub: every model and dataset comes from disk.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from editprobe.paths import default_data_dir  # noqa: E402

# 2 cores: default threading crawls as soon as a second process is busy.
torch.set_num_threads(2)

SOURCE_FILES = {
    "knowedit/zsre_test.json": ("knowedit_zsre", 1000),
    "knowedit/wiki_recent_train.json": ("knowedit_wiki_recent", 450),
    "knowedit/wiki_counterfact_train.json": ("knowedit_wiki_counterfact", 1200),
    "samples/zsre_mend_format.sample.json": ("mend_zsre", 20),
    "samples/counterfact_easyedit_flat.sample.json": ("easyedit_counterfact", 20),
}


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = default_data_dir()
    if not (path / "knowedit" / "zsre_test.json").exists():
        pytest.fail(f"real source data not found under {path}; set EDITPROBE_DATA to the shared data folder")
    return path


@pytest.fixture(scope="session")
def embedder():
    from editprobe.embeddings import Embedder

    return Embedder()


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of small edits: on two busy cores a second thread mostly waits on the first."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
