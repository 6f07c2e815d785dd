"""One conformance suite for every registered editor (benchmark/editors/conformance.py), on a tiny random LLaMA
with SmolLM2's vocabulary and ten real ZsRE edit requests."""

from __future__ import annotations

import pytest

from editprobe.benchmark.editors import EDITORS, EditRequest
from editprobe.benchmark.editors.base import Editor, EditHandle, state_digest
from editprobe.benchmark.editors.conformance import ConformanceError, check_editor
from editprobe.dataset_builder.sources import convert_file
from tests.benchmark_fixtures import fast_ls_hparams, tiny_llama_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _small(name: str, cache) -> dict:
    """Hyper-parameters for the 3-layer tiny model (layer indices < 3, few steps and texts)."""
    ls = fast_ls_hparams(cache)
    return {
        "noop": {}, "null": {},
        "ft": {"layers": (1,), "num_steps": 2, "lr": 1e-3},
        "kn": {"layers": (1,), "steps": 2, "max_neurons": 2},
        "kn-easyedit": {"layers": (1,), "steps": 1, "max_neurons": None, "mode": "easyedit",
                        "attribute_to": "ground_truth"},
        "ike": {"k": 2},
        "rome": {"layers": (1,), "mom2_adjustment": False, **ls},
        "memit": {"layers": (1, 2), **ls},
        "alphaedit": {"layers": (1,), "nullspace_threshold": 1.0, **ls},
        "mend": {"rank": 8, "train_steps": 2, "accumulate": 2, "cache_dir": str(cache)},  # trains on first use
    }[name]


@pytest.fixture(scope="module")
def requests(data_dir):
    return [EditRequest(record_id=r["id"], prompt=r["prompt"], subject=r["subject"], target=r["alt"],
                        ground_truth=r["answer"])
            for r in convert_file(data_dir / "knowedit" / "zsre_test.json").records[:10]]


def test_every_built_in_editor_is_covered():
    assert set(EDITORS.names()) >= {"noop", "null", "ft", "kn", "ike", "rome", "memit", "alphaedit", "mend"}


@pytest.mark.parametrize("name", ["noop", "null", "ft", "kn", "ike", "rome", "memit", "alphaedit", "mend"])
def test_editor_conformance(name, tokenizer, requests, tmp_path, embedder):
    model = tiny_llama_model(tokenizer)
    hp = _small(name, tmp_path / "cache")

    cls = EDITORS.get(name)

    def make():
        return cls(embedder=embedder, **hp) if name == "ike" else cls(**hp)

    ran = check_editor(make, model, tokenizer, requests)
    assert ran[0] == "restore_after_one_edit" and len(ran) == 6 - ("sequential" not in cls.modes)
    writes_weights = name not in ("noop", "null", "ike")
    assert ("failed_apply_leaves_no_change" in ran) == writes_weights  # the failure really fired mid-edit


class _Careless(Editor):
    """Writes its change, then fails on the second request without undoing the first write: the suite must say so."""

    name = "careless"
    modes = ("single", "sequential", "replay")
    Hparams = type(None)

    def __init__(self):
        self.hparams = None

    def apply(self, model, tokenizer, requests):
        p = model.model.norm.weight
        handle = EditHandle(model, ["model.norm.weight"], diagnostics={"bad": {1, 2}})
        import torch

        with torch.no_grad():
            p.add_(1.0)
        model(torch.tensor([[1, 2, 3]]))  # a forward pass after the write: an injected failure lands here
        return handle


def test_the_suite_names_every_broken_promise(tokenizer, requests):
    model = tiny_llama_model(tokenizer)
    before = state_digest(model)
    with pytest.raises(ConformanceError) as info:
        check_editor(_Careless, model, tokenizer, requests)
    message = str(info.value)
    assert "failed_apply_leaves_no_change: weights changed after a failure at forward call 1" in message
    assert "declared_modes: declares mode(s) the runner does not have: replay" in message
    assert "diagnostics_are_json: TypeError" in message
    assert state_digest(model) == before  # put back after each broken check


@pytest.mark.parametrize("name", ["ft", "kn", "mend"])
def test_ft_kn_and_mend_find_their_matrix_in_the_architecture_table(name, tokenizer, requests, tmp_path):
    """No LLaMA path is hard-coded: on GPT-2 (Conv1D, weight stored (in, out)) FT and KN edit
    transformer.h.1.mlp.c_proj, MEND both MLP matrices (c_fc, c_proj) of the last three blocks, and all keep the
    contract."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=3, n_head=4, n_positions=128,
                                       bos_token_id=tokenizer.eos_token_id,
                                       eos_token_id=tokenizer.eos_token_id)).eval()
    cls = EDITORS.get(name)
    hp = _small(name, tmp_path)
    assert getattr(cls().hparams, "module_template", getattr(cls().hparams, "module_templates", 0)) is None
    ran = check_editor(lambda: cls(**hp), model, tokenizer, requests, sequential=3)
    assert "failed_apply_leaves_no_change" in ran
    handle = cls(**hp).apply(model, tokenizer, [requests[0]])
    if name == "mend":
        assert handle.touched == [f"transformer.h.{i}.mlp.{m}.weight" for i in range(3) for m in ("c_fc", "c_proj")]
    else:
        assert set(handle.touched) <= {"transformer.h.1.mlp.c_proj.weight"} and handle.touched
    handle.restore()


def test_every_built_in_editor_names_its_reference():
    """`editprobe editors list` shows each editor's first docstring paragraph: every method other than the two
    controls names its paper (authors and year)."""
    import re

    from editprobe.cli import _summary

    for name in ("ft", "kn", "ike", "rome", "memit", "alphaedit", "mend"):
        summary = _summary(EDITORS.get(name))
        assert re.search(r"\(.*(19|20)\d\d", summary) and "\n" not in summary, (name, summary)
