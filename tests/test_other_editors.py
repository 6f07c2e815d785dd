"""KN (knowledge neurons), IKE (in-context editing) and the EasyEdit adapter."""

import importlib
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from editprobe.benchmark.editors import EditRequest, RestoreError
from editprobe.benchmark.editors.base import state_digest
from editprobe.benchmark.editors.easyedit import EasyEditEditor, EasyEditHparams, easyedit_editor
from editprobe.benchmark.editors.ike import RETAIN_FACTS, IKEEditor, IKEHparams, request_demonstrations
from editprobe.benchmark.editors.kn import KNEditor, KNHparams, neuron_attributions, riemann_integrated_gradients, select_neurons

FAKE_EASYEDIT = Path(__file__).parent / "fake_easyedit"
REQUEST = EditRequest("knowedit_zsre-00000", "Which family does Epaspidoceras belong to?", "Epaspidoceras",
                      "Noctuidae", "Aspidoceratidae")


def _tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32,
                         tie_word_embeddings=False)
    return LlamaForCausalLM(config).eval()


pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- KN: the Riemann sum

def test_integrated_gradients_of_a_linear_function_is_activation_times_gradient():
    # f(a) = c . a has gradient c everywhere, so (a/m) * sum_{k=1..m} c = a * c for every m.
    c = torch.tensor([[0.5, -2.0, 3.0], [1.0, 0.0, -0.25]], dtype=torch.float64)       # one c per group
    a = torch.tensor([[2.0, 1.0, -1.0], [4.0, 7.0, 2.0]], dtype=torch.float64)
    for steps in (1, 3, 20):
        ig = riemann_integrated_gradients(lambda s: (s * c[:, None, :]).sum(-1), a, steps)
        assert torch.allclose(ig, torch.tensor([[1.0, -2.0, -3.0], [4.0, 0.0, -0.5]], dtype=torch.float64))


def test_integrated_gradients_is_the_right_riemann_sum():
    # f(a) = sum a_i^2: (a_i/m) * sum_{k=1..m} 2 (k/m) a_i = a_i^2 (m+1)/m  (the exact integral gives a_i^2).
    a = torch.tensor([[1.0, -3.0]], dtype=torch.float64)
    ig = riemann_integrated_gradients(lambda s: (s ** 2).sum(-1), a, steps=4)
    assert torch.allclose(ig, torch.tensor([[1.25, 11.25]], dtype=torch.float64))


# --------------------------------------------------------------------------- KN: attribution on a tiny model

def _planted(model, prompt, target):
    """Make neuron (layer 1, j) write a large multiple of the target's unembedding: it dominates P(target)."""
    acts = {}
    mod = model.model.layers[1].mlp.down_proj
    h = mod.register_forward_pre_hook(lambda _m, args: acts.update(a=args[0][0, -1].detach()))
    with torch.no_grad():
        model(torch.tensor([prompt]))
    h.remove()
    j = int(acts["a"].abs().argmax())
    with torch.no_grad():
        model.lm_head.weight[target] *= 50
        u = model.lm_head.weight[target] / model.lm_head.weight[target].norm()
        mod.weight[:, j] = torch.sign(acts["a"][j]) * u / acts["a"][j].abs()   # a_j * column = unit vector along u
    return j


def _prob(model, prompt, target, zero_layer=None):
    handle = None
    if zero_layer is not None:
        def zero_last(_m, args):
            x = args[0].clone()
            x[:, -1] = 0
            return (x,)
        handle = model.model.layers[zero_layer].mlp.down_proj.register_forward_pre_hook(zero_last)
    with torch.no_grad():
        p = torch.softmax(model(torch.tensor([prompt])).logits[0, -1], -1)[target]
    if handle:
        handle.remove()
    return float(p)


def test_kn_attribution_finds_the_planted_neuron():
    model = _tiny_llama()
    prompt, target = [3, 7, 11, 5], 9
    j = _planted(model, prompt, target)
    scores, acts, _ = neuron_attributions(model, prompt, target, [0, 1], steps=100)
    assert scores.shape == acts.shape == (2, 32)
    top = select_neurons(scores, [0, 1], adaptive_threshold=0.2, max_neurons=5)
    assert top[0][:2] == (1, j)
    assert len(top) == 1 or top[1][2] < 0.2 * top[0][2]
    # Completeness of integrated gradients (Sundararajan et al. 2017): a layer's attributions sum to
    # P(a) - P(a with that layer's activations at the last position set to 0); 100 points get within 2%.
    for layer in (0, 1):
        expected = _prob(model, prompt, target) - _prob(model, prompt, target, zero_layer=layer)
        assert float(scores[layer].sum()) == pytest.approx(expected, rel=0.02, abs=1e-6)


# --------------------------------------------------------------------------- KN: the edit on SmolLM2

def test_kn_rewrite_moves_the_selected_columns_then_restores_bit_exactly(smollm2):
    model, tokenizer = smollm2
    before = state_digest(model)
    w0 = {layer: model.model.layers[layer].mlp.down_proj.weight.detach().clone() for layer in (28, 29)}
    editor = KNEditor(KNHparams(layers=(28, 29), steps=4, max_neurons=3, mode="rewrite",
                                erase_scale=2.0, update_scale=3.0))
    handle = editor.apply(model, tokenizer, [REQUEST])
    neurons = handle.diagnostics["neurons"]
    assert 1 <= len(neurons) <= 3
    assert [n["attribution"] for n in neurons] == sorted((n["attribution"] for n in neurons), reverse=True)
    # v_i <- v_i + sign(a_i) (3 E[" No"] - 2 E[" As"]): " Noctuidae" / " Aspidoceratidae" start with these tokens.
    e = model.lm_head.weight.detach()
    delta = 3.0 * e[tokenizer(" Noctuidae")["input_ids"][0]] - 2.0 * e[tokenizer(" Aspidoceratidae")["input_ids"][0]]
    for layer in (28, 29):
        w = model.model.layers[layer].mlp.down_proj.weight.detach()
        chosen = {n["index"]: math.copysign(1.0, n["activation"]) for n in neurons if n["layer"] == layer}
        for i in range(w.shape[1]):
            expected = w0[layer][:, i] + chosen[i] * delta if i in chosen else w0[layer][:, i]
            assert torch.allclose(w[:, i], expected, atol=1e-6)
    assert handle.touched == sorted({f"model.layers.{n['layer']}.mlp.down_proj.weight" for n in neurons})
    handle.restore()
    assert state_digest(model) == before


def test_kn_amplify_scales_the_selected_columns(smollm2):
    model, tokenizer = smollm2
    before = state_digest(model)
    w0 = model.model.layers[29].mlp.down_proj.weight.detach().clone()
    handle = KNEditor(KNHparams(layers=(29,), steps=4, max_neurons=2, mode="amplify", amplify_factor=3.0)).apply(
        model, tokenizer, [REQUEST])
    idx = [n["index"] for n in handle.diagnostics["neurons"]]
    w = model.model.layers[29].mlp.down_proj.weight.detach()
    assert torch.allclose(w[:, idx], 3.0 * w0[:, idx])
    others = [i for i in range(w.shape[1]) if i not in idx]
    assert torch.equal(w[:, others], w0[:, others])
    handle.restore()
    assert state_digest(model) == before


# --------------------------------------------------------------------------- IKE

class StubEmbedder:
    """Hand-set unit vectors: the query is e1, a text listed in ``sims`` is (s, sqrt(1 - s^2))."""

    def __init__(self, query: str, sims: dict[str, float]):
        self.query, self.sims, self.seen = query, sims, []

    def encode(self, texts):
        self.seen.append(list(texts))
        return np.array([[1.0, 0.0] if t == self.query else [self.sims[t], math.sqrt(1 - self.sims[t] ** 2)]
                         for t in texts], dtype=np.float32)


def test_ike_wraps_the_probe_with_the_k_most_similar_demonstrations_least_similar_first(tmp_path):
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps(e) + "\n" for e in [
        {"prompt": "Who founded Acme?", "target": "Ann", "rephrase": "Acme was founded by whom?"},
        {"prompt": REQUEST.prompt, "target": "leaked"},
        {"prompt": "Where is Bolt based?", "target": "Oslo"},
    ]))
    d = {
        "copy-acme": "New fact: Who founded Acme? Ann\nPrompt: Who founded Acme? Ann",
        "update-acme": "New fact: Who founded Acme? Ann\nPrompt: Acme was founded by whom? Ann",
        "copy-bolt": "New fact: Where is Bolt based? Oslo\nPrompt: Where is Bolt based? Oslo",
        "retain-bolt": "New fact: Where is Bolt based? Oslo\nPrompt: Who founded Acme? Ann",   # the pool wraps round
    }
    # demonstrations that ask or state the edit prompt would answer the probe: left out, however similar
    leaked = [f"New fact: Who founded Acme? Ann\nPrompt: {REQUEST.prompt} leaked",
              f"New fact: {REQUEST.prompt} leaked\nPrompt: {REQUEST.prompt} leaked",
              f"New fact: {REQUEST.prompt} leaked\nPrompt: Where is Bolt based? Oslo"]
    sims = dict(zip([*d.values(), *leaked], [0.3, 0.9, 0.6, 0.8, 0.99, 0.99, 0.99]))
    query = f"New fact: {REQUEST.prompt} Noctuidae\nPrompt: {REQUEST.prompt}"
    embedder = StubEmbedder(query, sims)
    editor = IKEEditor(IKEHparams(k=3, pool_path=str(pool)), embedder=embedder)
    handle = editor.apply(_tiny_llama(), None, [REQUEST])
    assert sorted(embedder.seen[0]) == sorted(sims)       # the pool is embedded once, then the query
    assert embedder.seen[1] == [query]
    # top 3 by similarity: update-acme 0.9, retain-bolt 0.8, copy-bolt 0.6; placed in ascending order
    expected = (d["copy-bolt"] + "\n\n" + d["retain-bolt"] + "\n\n" + d["update-acme"] + "\n\n"
                + f"New fact: {REQUEST.prompt} Noctuidae\nPrompt: What family are Epaspidoceras?")
    assert editor.wrap_prompt("What family are Epaspidoceras?", REQUEST) == expected
    assert [x["kind"] for x in handle.diagnostics["demonstrations"]] == ["copy", "retain", "update"]
    assert [x["similarity"] for x in handle.diagnostics["demonstrations"]] == pytest.approx([0.6, 0.8, 0.9])


def test_ike_reads_the_counterfact_training_split_as_copy_update_retain(data_dir):
    from editprobe.benchmark.editors import build_editor
    from editprobe.benchmark.editors.ike import pool_demonstrations, read_pool

    examples = read_pool("data:training/counterfact_train.json")
    assert len(examples) == 10000
    # record 0 of the file, read by hand: "Toko Yasuda, the" -> piano (was guitar), rephrase "Toko Yasuda is
    # incredible at", neighbourhood "John Lennon performs on the" -> guitar
    demos = pool_demonstrations(examples[:1])
    assert [(d.kind, d.prompt, d.answer) for d in demos] == [
        ("copy", "Toko Yasuda, the", "piano"), ("update", "Toko Yasuda is incredible at", "piano"),
        ("retain", "John Lennon performs on the", "guitar")]
    assert {d.fact for d in demos} == {"Toko Yasuda, the piano"}
    editor = build_editor("ike", preset="counterfact-k16")
    assert (editor.hparams.k, editor.hparams.pool_path) == (16, "data:training/counterfact_train.json")


def test_ike_request_pool_is_copy_update_retain_1_3_4_without_clashing_facts():
    request = EditRequest("r", "What is the capital of Kenya?", "Kenya", "Paris")
    demos = request_demonstrations(request)
    assert [x.kind for x in demos] == ["copy"] + ["update"] * 3 + ["retain"] * 4
    assert {x.fact for x in demos} == {"What is the capital of Kenya? Paris"}
    assert demos[0].prompt == request.prompt and all(x.answer == "Paris" for x in demos[:4])
    assert all(request.prompt in x.prompt for x in demos[1:4])
    retained = [(x.prompt, x.answer) for x in demos[4:]]
    # the capital of France (answer "Paris") and the Kenya question clash with the edit and are skipped
    assert retained == [f for f in RETAIN_FACTS if "Paris" not in f[1] and "Kenya" not in f[0]][:4]


def test_ike_changes_no_weight_and_survives_the_chat_template(smollm2):
    from editprobe.benchmark.sampling import render_prompts

    model, tokenizer = smollm2
    before = state_digest(model)
    demos = request_demonstrations(REQUEST)
    query = f"New fact: {REQUEST.prompt} Noctuidae\nPrompt: {REQUEST.prompt}"
    editor = IKEEditor(IKEHparams(k=2), embedder=StubEmbedder(query, {x.render().strip(): 0.5 for x in demos}))
    handle = editor.apply(model, tokenizer, [REQUEST])
    assert handle.touched == [] and state_digest(model) == before
    wrapped = editor.wrap_prompt("What family are Epaspidoceras?", REQUEST)
    assert wrapped.count("New fact: ") == 3 and wrapped.endswith("\nPrompt: What family are Epaspidoceras?")

    class Settings:
        chat_template, system_prompt = True, None

    rendered = render_prompts(tokenizer, [wrapped], Settings)[0]
    assert wrapped in rendered and rendered.index(wrapped) < rendered.rindex("<|im_start|>assistant")
    handle.restore()
    assert state_digest(model) == before


# --------------------------------------------------------------------------- EasyEdit adapter

@pytest.fixture()
def fake_easyedit(tmp_path):
    def hparams_file(alg, **extra):
        path = tmp_path / f"{alg}.yaml"
        path.write_text(json.dumps({"alg_name": alg, "param_name": "model.layers.1.mlp.down_proj.weight",
                                    "delta": 0.5, **extra}))
        return str(path)

    yield hparams_file
    sys.path[:] = [p for p in sys.path if p != str(FAKE_EASYEDIT.resolve())]
    for name in [m for m in sys.modules if m == "easyeditor" or m.startswith("easyeditor.")]:
        del sys.modules[name]


def _easyedit(alg, hparams_file):
    return easyedit_editor(alg)(EasyEditHparams(hparams_file=hparams_file, easyedit_path=str(FAKE_EASYEDIT)))


def test_easyedit_weights_copy_method_edits_then_restores_bit_exactly(fake_easyedit):
    model = _tiny_llama()
    name = "model.layers.1.mlp.down_proj.weight"
    w0 = model.get_parameter(name).detach().clone()
    before = state_digest(model)
    editor = _easyedit("ADD-DELTA", fake_easyedit("ADD-DELTA"))
    assert editor.hparams.alg == "ADD-DELTA" and editor.hparams_dict()["easyedit_config"]["delta"] == 0.5
    handle = editor.apply(model, None, [REQUEST])
    assert torch.equal(model.get_parameter(name).detach(), w0 + 0.5)
    assert handle.touched == [name] and handle.diagnostics["restore"] == "weights_copy"
    from easyeditor import CALLS

    call = CALLS[-1]
    assert call["requests"] == [{"prompt": REQUEST.prompt, "target_new": "Noctuidae", "subject": "Epaspidoceras",
                                 "ground_truth": "Aspidoceratidae"}]
    assert (call["copy"], call["return_orig_weights"], call["keep_original_weight"]) == (False, True, True)
    handle.restore()
    assert state_digest(model) == before


def test_easyedit_unpatch_method_restores_bit_exactly(fake_easyedit):
    model = _tiny_llama()
    name = "model.layers.1.mlp.down_proj.weight"
    w0 = model.get_parameter(name).detach().clone()
    before = state_digest(model)
    handle = _easyedit("PATCH", fake_easyedit("PATCH")).apply(model, None, [REQUEST])
    assert torch.equal(model.get_parameter(name).detach()[:, 0], w0[:, 0] * 1.5)
    assert handle.touched == [name] and handle.diagnostics["restore"] == "unpatch"
    handle.restore()
    assert state_digest(model) == before


def test_easyedit_refuses_an_edit_it_cannot_undo(fake_easyedit):
    model = _tiny_llama()
    with pytest.raises(RestoreError, match="model.norm.weight"):
        _easyedit("LEAKY", fake_easyedit("LEAKY")).apply(model, None, [REQUEST])
    with pytest.raises(ValueError, match="needs EasyEdit's hyper-parameter YAML"):
        _easyedit("PATCH", None).apply(model, None, [REQUEST])
    with pytest.raises(ValueError, match="not in EasyEdit's ALG_DICT"):
        _easyedit("PMET", fake_easyedit("PMET")).apply(model, None, [REQUEST])


def test_easyedit_sees_the_padding_side_its_own_editor_would_set(fake_easyedit):
    """EasyEdit's BaseEditor pads on the right for ROME-family methods on LLaMA models (their subject and target
    positions assume it) and leaves other methods alone; the adapter does the same for the call only."""
    from transformers import AutoTokenizer

    from editprobe.models import smollm2_local_copy
    from editprobe.paths import default_cache_dir

    tokenizer = AutoTokenizer.from_pretrained(smollm2_local_copy(default_cache_dir()))
    tokenizer.padding_side = "left"  # as editprobe loads it
    model = _tiny_llama()  # model_type "llama"
    before = state_digest(model)
    handle = _easyedit("ROME", fake_easyedit("ROME", model_name="HuggingFaceTB/SmolLM2-135M-Instruct")).apply(
        model, tokenizer, [REQUEST])
    from easyeditor.util.alg_dict import CALLS  # importable once the adapter has put the fake on sys.path

    assert CALLS[-1]["alg"] == "ADD-DELTA" and CALLS[-1]["padding_side"] == "right"
    assert tokenizer.padding_side == "left"  # put back for editprobe's batched sampling
    handle.restore()
    _easyedit("ADD-DELTA", fake_easyedit("ADD-DELTA")).apply(model, tokenizer, [REQUEST]).restore()
    assert CALLS[-1]["padding_side"] == "left"  # not a right-padding method: editprobe's padding stays
    assert state_digest(model) == before


def test_easyedit_imports_only_the_chosen_method(fake_easyedit):
    """The fake's models/__init__ fails as EasyEdit's does on transformers 5 (it imports every method): the
    adapter still loads ROME from models/rome, without running the parent packages' __init__."""
    sys.path.insert(0, str(FAKE_EASYEDIT.resolve()))
    with pytest.raises(ImportError, match="modeling_attn_mask_utils"):
        importlib.import_module("easyeditor.models")  # what importing every method does
    for name in [m for m in sys.modules if m == "easyeditor" or m.startswith("easyeditor.")]:
        del sys.modules[name]
    model = _tiny_llama()
    before = state_digest(model)
    handle = _easyedit("ROME", fake_easyedit("ROME")).apply(model, None, [REQUEST])
    assert sys.modules["easyeditor.models.rome"].__name__ == "easyeditor.models.rome"
    assert not hasattr(sys.modules["easyeditor"], "ALG_DICT")  # the package __init__ never ran
    handle.restore()
    assert state_digest(model) == before


def test_easyedit_state_is_reset_so_single_edits_stay_independent(fake_easyedit):
    """AlphaEdit's module-level key cache and MEND's shared executor would make an edit depend on the ones
    before it; the adapter resets the cache and builds a fresh executor per edit: two applications of the same
    edit write the same change."""
    name = "model.layers.1.mlp.down_proj.weight"
    for alg in ("AlphaEdit", "MEND"):
        model = _tiny_llama()
        w0 = model.get_parameter(name).detach().clone()
        editor = _easyedit(alg, fake_easyedit(alg))
        changes = []
        for _ in range(2):
            handle = editor.apply(model, None, [REQUEST])
            changes.append(model.get_parameter(name).detach() - w0)
            handle.restore()
        assert torch.equal(changes[0], changes[1]) and float(changes[0].abs().max()) == pytest.approx(0.5), alg
    assert len(sys.modules["easyeditor.models.mend"].INSTANCES) == 2


def test_easyedit_refuses_methods_that_cannot_edit_independently(fake_easyedit):
    with pytest.raises(ValueError, match="easyedit:IKE cannot be scored here: it edits the prompt"):
        _easyedit("IKE", fake_easyedit("IKE")).apply(_tiny_llama(), None, [REQUEST])
    with pytest.raises(ValueError, match="easyedit:GRACE cannot be scored here"):
        _easyedit("GRACE", fake_easyedit("GRACE")).apply(_tiny_llama(), None, [REQUEST])


@pytest.mark.parametrize("alg, name, model_type, side", [
    ("ROME", "./hugging_cache/llama-2-7b", "llama", "right"),
    ("MEMIT", "Qwen/Qwen2.5-7B-Instruct", "qwen2", "right"),
    ("AlphaEdit", "/models/m", "mistral", "right"),   # a path that does not say the family: config.model_type does
    ("ROME", "gpt2-xl", "gpt2", None),
    ("MEND", "./hugging_cache/llama-2-7b", "llama", None),
    ("FT", "Qwen/Qwen2.5-7B", "qwen2", None),
])
def test_easyedit_padding_rule(alg, name, model_type, side):
    from editprobe.benchmark.editors.easyedit import easyedit_padding_side

    assert easyedit_padding_side(alg, name, model_type) == side


def test_registry_resolves_easyedit_names():
    from editprobe.benchmark.editors import editor_class

    cls = editor_class("easyedit:MEND")
    assert issubclass(cls, EasyEditEditor) and cls.alg == "MEND" and cls.name == "easyedit"


def test_kn_easyedit_rule_by_hand():
    from editprobe.benchmark.editors.kn import easyedit_rewrite_value_vectors

    E = torch.arange(15, dtype=torch.float32).reshape(5, 3)        # 5 tokens, hidden 3: E[t] = (3t, 3t+1, 3t+2)
    W = torch.zeros(3, 4)
    easyedit_rewrite_value_vectors(W, [1, 3], E, orig_ids=[0], new_ids=[2])
    # one token each: v += 2 * (E[2] - E[0]) = 2 * (6, 6, 6) on columns 1 and 3 only
    assert W[:, 1].tolist() == [12.0, 12.0, 12.0] and W[:, 3].tolist() == [12.0, 12.0, 12.0]
    assert W[:, 0].tolist() == [0.0] * 3 and W[:, 2].tolist() == [0.0] * 3
    W = torch.zeros(3, 4)
    easyedit_rewrite_value_vectors(W, [0], E, orig_ids=[0, 1], new_ids=[3, 4])
    # several: v += (E[3] + E[4]) - (E[0] + E[1]) = (21, 23, 25) - (3, 5, 7) = (18, 18, 18)
    assert W[:, 0].tolist() == [18.0, 18.0, 18.0]


def test_kn_easyedit_preset_and_tokens(smollm2):
    from editprobe.benchmark.editors import build_editor
    from editprobe.benchmark.editors.kn import easyedit_rewrite_tokens

    editor = build_editor("kn", preset="easyedit")
    hp = editor.hparams
    assert (hp.mode, hp.attribute_to, hp.steps, hp.adaptive_threshold, hp.max_neurons) == (
        "easyedit", "ground_truth", 1, 0.2, None)
    model, tokenizer = smollm2
    target_ids, original = easyedit_rewrite_tokens(model, tokenizer, REQUEST.prompt, "Noctuidae")
    assert target_ids == tokenizer.encode("Noctuidae") and len(original) == len(target_ids)
    with torch.no_grad():
        first = int(model(tokenizer(REQUEST.prompt, return_tensors="pt").input_ids).logits[0, -1].argmax())
    assert original[0] == first
