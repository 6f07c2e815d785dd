import os
from pathlib import Path

# Tests never reach a hub: every model and dataset comes from disk.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Tests never write into the user's home caches: editprobe's cache (the converted SmolLM2 copy, reused across
# test runs of this checkout), Hugging Face's and matplotlib's live under build/test-cache. Set before any of
# those libraries is imported; subprocesses inherit it.
TEST_CACHE = Path(os.environ.get("EDITPROBE_TEST_CACHE") or Path(__file__).resolve().parent.parent / "build" / "test-cache")
os.environ["EDITPROBE_CACHE"] = str(TEST_CACHE / "editprobe")
os.environ["HF_HOME"] = str(TEST_CACHE / "huggingface")
os.environ["MPLCONFIGDIR"] = str(TEST_CACHE / "matplotlib")

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
    "samples/counterfact_rome_layout.sample.json": ("rome_counterfact", 20),
    "samples/zsre_subject_replace.sample.json": ("zsre_subject_replace", 20),
    "samples/zsre_inverse_relation.sample.json": ("zsre_inverse_relation", 20),
}


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = default_data_dir()
    if not (path / "knowedit" / "zsre_test.json").exists():
        pytest.fail(f"real source data not found under {path}; set EDITPROBE_DATA to the shared data folder")
    return path


HOME_CACHES = [Path.home() / ".cache" / name for name in ("editprobe", "huggingface", "matplotlib")]


def _listing(folders):
    return {str(p) for folder in folders if folder.exists() for p in folder.rglob("*")}


@pytest.fixture(scope="session", autouse=True)
def home_caches_untouched():
    """The whole run writes nothing under the user's ~/.cache (everything goes to build/test-cache)."""
    before = _listing(HOME_CACHES)
    yield
    written = sorted(_listing(HOME_CACHES) - before)
    assert not written, f"the tests wrote into the user's cache: {written[:5]}"


def pytest_collection_modifyitems(items):
    """Every test that runs the embedded model carries the ``model`` marker (``pytest -m "not model"``: the fast
    unit tests only)."""
    for item in items:
        if "smollm2" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.model)


@pytest.fixture(scope="session")
def smollm2_bundle():
    """The embedded SmolLM2-135M-Instruct, loaded once for the whole run: ``(model, tokenizer, info)``."""
    from editprobe.models import load_model

    return load_model()


@pytest.fixture(scope="module")
def smollm2(smollm2_bundle):
    """``(model, tokenizer)`` of the shared model. A module that leaves its weights changed fails here, at
    teardown, instead of silently corrupting every later module's numbers."""
    from editprobe.benchmark.editors.base import state_digest

    model, tokenizer, _ = smollm2_bundle
    before = state_digest(model)
    yield model, tokenizer
    assert state_digest(model) == before, "this module left the shared SmolLM2's weights changed"


@pytest.fixture(scope="session")
def tokenizer():
    """SmolLM2's tokenizer (for the tiny random models of the editor tests)."""
    from transformers import AutoTokenizer

    from editprobe.models import smollm2_local_copy
    from editprobe.paths import default_cache_dir

    return AutoTokenizer.from_pretrained(smollm2_local_copy(default_cache_dir()))


@pytest.fixture(scope="session")
def zsre_requests(data_dir):
    """Edit requests of the first 50 real ZsRE records."""
    from editprobe.benchmark.editors import EditRequest
    from editprobe.dataset_builder.sources import convert_file

    records = convert_file(data_dir / "knowedit" / "zsre_test.json").records[:50]
    return [EditRequest(r["id"], r["prompt"], r["subject"], r["alt"]) for r in records]


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
