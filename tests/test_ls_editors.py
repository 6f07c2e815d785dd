"""ROME, MEMIT and AlphaEdit: closed forms against independent numpy derivations, bit-exact restore after many
edits, module resolution, the ROME/EasyEdit stats layout, and deterministic context templates."""

import hashlib
import json

import numpy as np
import pytest
import torch
from transformers import (GPT2Config, GPT2LMHeadModel, GPTJConfig, GPTJForCausalLM, GPTNeoXConfig,
                          GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM)

from editprobe.benchmark.editors import EditRequest, editor_class, preset_path, presets
from editprobe.benchmark.editors import context as context_mod
from editprobe.benchmark.editors.alphaedit import AlphaEditEditor, AlphaEditHparams, null_space_projector, null_space_update
from editprobe.benchmark.editors.base import RestoreError, load_hparams, state_digest
from editprobe.benchmark.editors.context import context_templates, model_cache_name
from editprobe.benchmark.editors.covariance import second_moments, stats_path
from editprobe.benchmark.editors.layers import edit_site, resolve_layout
from editprobe.benchmark.editors.memit import MEMITEditor, MEMITHparams, least_squares_update
from editprobe.benchmark.editors.rome import ROMEEditor, ROMEHparams, compute_v, rank_one_update
from tests.benchmark_fixtures import fast_ls_hparams, tiny_llama_model

rng = np.random.default_rng(0)


pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- fixtures

def _tiny_gpt2(tokenizer, seed=0):
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=3, n_head=4, n_positions=128,
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    return GPT2LMHeadModel(config).eval()


@pytest.fixture(scope="module")
def tiny_llama(tokenizer):
    return tiny_llama_model(tokenizer)


# --------------------------------------------------------------------------- closed forms (numpy derivations)

def test_rome_rank_one_update_writes_k_star_and_keeps_the_c_orthogonal_keys():
    d_out, d_in = 5, 7
    W = rng.normal(size=(d_out, d_in))
    A = rng.normal(size=(d_in, 50))
    C = A @ A.T / 50                                          # a second moment: symmetric positive definite
    k, v = rng.normal(size=d_in), rng.normal(size=d_out)
    delta, right, left = rank_one_update(torch.tensor(k), torch.tensor(v), torch.tensor(W @ k), torch.tensor(C))
    W2 = W + delta.numpy()
    np.testing.assert_allclose(W2 @ k, v, atol=1e-10)          # W' k* = v*
    u = np.linalg.solve(C, k)                                 # C^-1 k*
    for _ in range(3):                                        # x with (C^-1 k*)^T x = 0 keeps its output
        x = rng.normal(size=d_in)
        x -= u * (u @ x) / (u @ u)
        np.testing.assert_allclose(W2 @ x, W @ x, atol=1e-10)
    assert np.linalg.matrix_rank(delta.numpy()) == 1
    # written_key "prompt": another key (the bare prompt's) is written along the same direction C^-1 k*
    key = k + 0.1 * rng.normal(size=d_in)
    delta_p, _, left = rank_one_update(torch.tensor(k), torch.tensor(v), torch.tensor(W @ key), torch.tensor(C),
                                       torch.tensor(key))
    np.testing.assert_allclose((W + delta_p.numpy()) @ key, v, atol=1e-10)
    np.testing.assert_allclose(left.numpy(), u, atol=1e-10)
    # C = I: the minimum-norm rank-one correction (v - W k) k^T / |k|^2
    delta_id, _, _ = rank_one_update(torch.tensor(k), torch.tensor(v), torch.tensor(W @ k), None)
    np.testing.assert_allclose(delta_id.numpy(), np.outer(v - W @ k, k) / (k @ k), atol=1e-12)


def test_memit_update_solves_the_least_squares_problem_with_preserved_keys():
    d_out, d_in, n, m, lam = 4, 6, 3, 40, 2.5
    K0 = rng.normal(size=(d_in, m))                           # preserved keys: lam * C = K0 K0^T
    C = K0 @ K0.T / lam
    K, R = rng.normal(size=(n, d_in)), rng.normal(size=(n, d_out))
    delta = least_squares_update(torch.tensor(K), torch.tensor(R), torch.tensor(C), lam).numpy()
    # independent: min |Delta K^T - R^T|^2 + |Delta K0|^2 as one stacked least-squares problem
    lhs = np.concatenate([K, K0.T])                           # [(n + m), d_in]
    rhs = np.concatenate([R, np.zeros((m, d_out))])           # [(n + m), d_out]
    expected = np.linalg.lstsq(lhs, rhs, rcond=None)[0].T
    np.testing.assert_allclose(delta, expected, atol=1e-10)
    np.testing.assert_allclose(delta @ (lam * C + K.T @ K), R.T @ K, atol=1e-10)   # the normal equations


def test_alphaedit_update_lies_in_the_null_space_of_preserved_keys():
    d_out, d_in, rank, n, l2 = 4, 8, 4, 3, 0.7
    K0 = rng.normal(size=(d_in, rank)) @ rng.normal(size=(rank, 60))   # preserved keys span 4 of 8 dimensions
    C = K0 @ K0.T / 60
    P, dim = null_space_projector(torch.tensor(C), threshold=1e-8)
    assert dim == d_in - rank
    K, R = rng.normal(size=(n, d_in)), rng.normal(size=(n, d_out))
    Kp = rng.normal(size=(d_in, 5))                                    # keys written by earlier edits
    delta = null_space_update(torch.tensor(K), torch.tensor(R), P, torch.tensor(Kp @ Kp.T), l2).numpy()
    np.testing.assert_allclose(delta @ K0, 0, atol=1e-9)                # preserved keys keep their outputs
    # independent: Delta = Y N^T over an orthonormal basis N of the null space of K0^T, with Y minimising
    # |Y N^T K^T - R^T|^2 + |Y N^T Kp|^2 + l2 |Y|^2
    U, _, _ = np.linalg.svd(K0)
    N = U[:, rank:]                                                    # [d_in, d_in - rank]
    G = N.T @ (K.T @ K + Kp @ Kp.T) @ N + l2 * np.eye(d_in - rank)
    Y = np.linalg.solve(G, N.T @ K.T @ R).T
    np.testing.assert_allclose(delta, Y @ N.T, atol=1e-9)


# --------------------------------------------------------------------------- editors on tiny models

@pytest.mark.parametrize("cls,hparams,layers", [
    (ROMEEditor, ROMEHparams, (1,)),
    (MEMITEditor, MEMITHparams, (0, 1)),
    (AlphaEditEditor, AlphaEditHparams, (0, 1)),
])
def test_fifty_sequential_edits_restore_bit_exactly(tokenizer, zsre_requests, tmp_path, cls, hparams, layers):
    model = tiny_llama_model(tokenizer, seed=1)
    extra = {"nullspace_threshold": 1.0} if cls is AlphaEditEditor else {}
    editor = cls(hparams(layers=layers, **fast_ls_hparams(tmp_path, **extra)))
    before = state_digest(model)
    handles = [editor.apply(model, tokenizer, [r]) for r in zsre_requests]
    assert len(handles) == 50 and state_digest(model) != before
    diag = handles[-1].diagnostics
    assert diag["layers"] == list(layers) and all(x > 0 for x in diag["right_vector_norm"])
    for h in reversed(handles):
        h.restore()
    assert state_digest(model) == before
    if cls is AlphaEditEditor:
        assert editor.edited_kkt == {}                   # the memory of edited keys is rolled back with the weights


def test_an_edit_chain_measures_the_change_since_the_start_and_restores_it(tokenizer, zsre_requests, tmp_path):
    """The sequential runner's chain: ‖W_t − W_0‖ over the touched weights against a snapshot taken by hand, each
    handle's digest against a recomputation, and a restore that catches a change no edit made."""
    from editprobe.benchmark.editors.base import tensor_digest
    from editprobe.benchmark.modes import EditChain

    model = tiny_llama_model(tokenizer, seed=2)
    name = "model.layers.1.mlp.down_proj.weight"
    w0 = dict(model.named_parameters())[name].detach().clone()
    editor = ROMEEditor(ROMEHparams(layers=(1,), mom2_adjustment=False, **fast_ls_hparams(tmp_path)))
    chain = EditChain(model)
    for request in zsre_requests[:3]:
        handle = editor.apply(model, tokenizer, [request])
        own = float((dict(model.named_parameters())[name].detach().double() - handle.original(name).double()).norm())
        assert handle.drift() == pytest.approx(own, rel=1e-6)                # this edit's own size
        chain.add(handle)
        w = dict(model.named_parameters())[name].detach()
        assert handle.touched == [name]
        assert handle.digest() == hashlib.sha256(name.encode() + tensor_digest(w).encode()).hexdigest()
        assert chain.weight_change() == pytest.approx(float((w.double() - w0.double()).norm()), rel=1e-6)
    assert chain.weight_change() != pytest.approx(chain.handles[-1].drift(), rel=1e-3)  # more than the last edit
    chain.restore()
    assert torch.equal(dict(model.named_parameters())[name], w0) and chain.handles == []
    chain = EditChain(model)
    chain.add(editor.apply(model, tokenizer, [zsre_requests[0]]))
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight[0, 0] += 1.0         # a change outside the chain
    with pytest.raises(RestoreError, match="differs from its state before the first edit"):
        chain.restore()


def test_a_failed_sequence_leaves_no_half_written_weights(tokenizer, tiny_llama, zsre_requests, tmp_path):
    before = state_digest(tiny_llama)
    bad = EditRequest("bad", "Who wrote Hamlet?", "Macbeth", "Marlowe")      # the subject is not in the prompt
    editor = ROMEEditor(ROMEHparams(layers=(1,), mom2_adjustment=False, **fast_ls_hparams(tmp_path)))
    with pytest.raises(ValueError, match="subject 'Macbeth' does not occur in the edit prompt"):
        editor.apply(tiny_llama, tokenizer, [zsre_requests[0], bad])          # the first edit is written, then undone
    assert state_digest(tiny_llama) == before


def test_alphaedit_remembers_edited_keys_per_instance(tokenizer, zsre_requests, tmp_path):
    model = tiny_llama_model(tokenizer, seed=2, layers=2)
    first = AlphaEditEditor(AlphaEditHparams(layers=(1,), nullspace_threshold=1.0, **fast_ls_hparams(tmp_path)))
    first.apply(model, tokenizer, zsre_requests[:2])
    other = AlphaEditEditor(AlphaEditHparams(layers=(1,), nullspace_threshold=1.0, **fast_ls_hparams(tmp_path)))
    (memory,) = first.edited_kkt.values()
    assert other.edited_kkt == {} and torch.linalg.matrix_rank(memory) == 2   # two keys written, nothing shared


@pytest.mark.parametrize("build", [tiny_llama_model, _tiny_gpt2])
def test_upper_layer_replay_gives_the_full_forward_value(tokenizer, zsre_requests, tmp_path, build):
    model = build(tokenizer)
    site = edit_site(model, 1)
    layout = resolve_layout(model)
    values = []
    for skip in (True, False):
        hp = ROMEHparams(v_num_grad_steps=4, skip_lower_layers=skip)
        v = compute_v(model, tokenizer, zsre_requests[0], site, ["{}", "Some context. {}"], layout, hp)
        assert v.skipped_lower_layers == skip and v.delta_norm > 0 and v.steps == 4
        values.append(v.value)
    torch.testing.assert_close(values[0], values[1], rtol=1e-4, atol=1e-5)


def test_registry_targets_and_presets_load_strictly():
    assert editor_class("editprobe.benchmark.editors.rome:ROMEEditor") is ROMEEditor
    for name, cls in (("rome", ROMEEditor), ("memit", MEMITEditor), ("alphaedit", AlphaEditEditor)):
        assert set(presets(name)) >= {"smollm2-135m", "llama2-7b", "llama3-8b", "qwen2.5-7b"}
        for preset in presets(name):
            load_hparams(cls.Hparams, preset_path(name, preset))   # unknown keys would raise


# --------------------------------------------------------------------------- module resolution

def _tiny(config_cls, model_cls, **kw):
    torch.manual_seed(0)
    return model_cls(config_cls(vocab_size=64, **kw)).eval()


@pytest.mark.parametrize("make,name,transposed,final_norm", [
    (lambda: _tiny(LlamaConfig, LlamaForCausalLM, hidden_size=16, intermediate_size=40, num_hidden_layers=2,
                   num_attention_heads=2), "model.layers.1.mlp.down_proj", False, "model.norm"),
    (lambda: _tiny(GPT2Config, GPT2LMHeadModel, n_embd=16, n_inner=40, n_layer=2, n_head=2),
     "transformer.h.1.mlp.c_proj", True, "transformer.ln_f"),
    (lambda: _tiny(GPTJConfig, GPTJForCausalLM, n_embd=16, n_inner=40, n_layer=2, n_head=2, rotary_dim=4),
     "transformer.h.1.mlp.fc_out", False, "transformer.ln_f"),
    (lambda: _tiny(GPTNeoXConfig, GPTNeoXForCausalLM, hidden_size=16, intermediate_size=40, num_hidden_layers=2,
                   num_attention_heads=2), "gpt_neox.layers.1.mlp.dense_4h_to_h", False, "gpt_neox.final_layer_norm"),
])
def test_module_resolution_and_weight_orientation(make, name, transposed, final_norm):
    model = make()
    site = edit_site(model, 1)
    assert (site.name, site.transposed, site.d_in, site.d_out) == (name, transposed, 40, 16)
    assert resolve_layout(model).final_norm == final_norm
    k = torch.randn(40)
    delta = torch.zeros(16, 40)
    delta[3, 7] = 2.0                                    # output 3 reads input 7 twice as much more
    with torch.no_grad():
        before = site.module(k)
        site.add_(delta)
        after = site.module(k)
    expected = before.clone()
    expected[3] += 2.0 * k[7]
    torch.testing.assert_close(after, expected)


def test_module_template_overrides_the_table_and_unknown_types_fail_clearly():
    model = _tiny(LlamaConfig, LlamaForCausalLM, hidden_size=16, intermediate_size=40, num_hidden_layers=2,
                  num_attention_heads=2)
    site = edit_site(model, 0, "model.layers.{}.mlp.up_proj")
    assert (site.name, site.d_in, site.d_out) == ("model.layers.0.mlp.up_proj", 16, 40)
    assert resolve_layout(model, "model.layers.{}.mlp.up_proj").final_norm == "model.norm"
    model.config.model_type = "mystery"
    model.model.layers[0].mlp.down_proj = None  # no LLaMA-like fallback either
    with pytest.raises(ValueError, match="no MLP layout known for model_type 'mystery'; set module_template"):
        resolve_layout(model)


# --------------------------------------------------------------------------- covariance statistics

def test_a_rome_layout_stats_file_is_reused_as_is(tokenizer, tiny_llama, zsre_requests, tmp_path):
    site = edit_site(tiny_llama, 1)
    d = site.d_in
    A = rng.normal(size=(d, 3 * d))
    mom2_sum, count = (A @ A.T).astype(np.float32), 3 * d           # ROME stores the SUM of k k^T and the count
    path = tmp_path / model_cache_name(tiny_llama) / "wikipedia_stats" / "model.layers.1.mlp.down_proj_float32_mom2_100000.npz"
    path.parent.mkdir(parents=True)
    np.savez(path, **{"mom2.mom2": mom2_sum, "mom2.count": np.asarray(count)})
    assert stats_path(tmp_path, model_cache_name(tiny_llama), "wikipedia", site.name, "float32", 100000) == path
    # offline, "wikipedia" can only come from the file: a hub access would raise
    (m,) = second_moments(tiny_llama, tokenizer, [site], corpus="wikipedia", n_samples=100000, dtype="float32",
                          stats_dir=tmp_path).values()
    assert not m.computed and m.count == count
    torch.testing.assert_close(m.moment(), torch.tensor(mom2_sum / count))
    hp = {**fast_ls_hparams(tmp_path / "cache"), "mom2_n_samples": 100000}
    editor = ROMEEditor(ROMEHparams(layers=(1,), mom2_dataset="wikipedia", stats_dir=str(tmp_path), **hp))
    handle = editor.apply(tiny_llama, tokenizer, zsre_requests[:1])
    assert handle.diagnostics["corpus"][site.name] == {"corpus": "wikipedia", "count": count, "path": str(path),
                                                       "computed": False}
    handle.restore()


def test_self_corpus_stats_are_written_in_the_rome_layout(tokenizer, tiny_llama, tmp_path):
    site = edit_site(tiny_llama, 0)
    (m,) = second_moments(tiny_llama, tokenizer, [site], corpus="self", n_samples=6, dtype="float32",
                          stats_dir=tmp_path, sample_tokens=8).values()
    path = tmp_path / model_cache_name(tiny_llama) / "self_stats" / "model.layers.0.mlp.down_proj_float32_mom2_6.npz"
    assert m.computed and m.path == path
    with np.load(path) as data:
        assert sorted(data.files) == ["mom2.count", "mom2.mom2"]
        assert int(data["mom2.count"]) == m.count > 6      # one key per token of 6 texts
        C = data["mom2.mom2"] / int(data["mom2.count"])
    np.testing.assert_allclose(C, C.T, rtol=1e-5)
    assert np.linalg.eigvalsh(C.astype(np.float64)).min() > -1e-6
    (again,) = second_moments(tiny_llama, tokenizer, [site], corpus="self", n_samples=6, dtype="float32",
                              stats_dir=tmp_path, sample_tokens=8).values()
    assert not again.computed and torch.equal(again.mom2, m.mom2)


def test_key_statistics_stop_the_forward_pass_at_the_deepest_site(tokenizer, tiny_llama):
    """The sums equal k^T k of the site's inputs captured in full forward passes, and no layer above the deepest
    site runs."""
    from editprobe.benchmark.editors.covariance import accumulate_second_moments

    sites = [edit_site(tiny_llama, 0), edit_site(tiny_llama, 1)]
    texts = ["The cat sat on the mat.", "Paris is the capital of France, and it is large.", "Hello"]
    captured = {s.name: [] for s in sites}
    hooks = [s.module.register_forward_pre_hook(lambda m, a, name=s.name: captured[name].append(a[0].detach()))
             for s in sites]
    try:
        with torch.no_grad():
            for t in texts:      # one text at a time: no padding, every token counts
                tiny_llama(input_ids=torch.tensor([tokenizer(t)["input_ids"][:16]]))
    finally:
        for h in hooks:
            h.remove()
    above = []
    last = len(tiny_llama.model.layers) - 1
    probe = tiny_llama.model.layers[last].register_forward_pre_hook(lambda m, a: above.append(1))
    try:
        acc = accumulate_second_moments(tiny_llama, tokenizer, sites, texts, 16, torch.float64, batch_size=2)
    finally:
        probe.remove()
    assert last > 1 and not above
    for s in sites:
        K = torch.cat([k.reshape(-1, k.shape[-1]) for k in captured[s.name]]).double()
        mom2, count = acc[s.name]
        assert count == K.shape[0]
        torch.testing.assert_close(mom2, K.T @ K, rtol=1e-5, atol=1e-6)


def test_an_unreachable_hub_corpus_fails_with_one_clear_sentence(tokenizer, tiny_llama, tmp_path):
    with pytest.raises(RuntimeError, match="could not be loaded from the Hugging Face hub.*mom2_dataset: self"):
        second_moments(tiny_llama, tokenizer, [edit_site(tiny_llama, 0)], corpus="editprobe-no-such-corpus",
                       n_samples=4, dtype="float32", stats_dir=tmp_path)


# --------------------------------------------------------------------------- context templates

def test_context_templates_are_deterministic_and_cached_on_disk(tokenizer, tiny_llama, tmp_path, monkeypatch):
    a = context_templates(tiny_llama, tokenizer, tmp_path / "a", ((6, 5),), seed=3)
    b = context_templates(tiny_llama, tokenizer, tmp_path / "b", ((6, 5),), seed=3)
    assert a == b and a[0] == "{}" and len(a) == 6
    assert all(t.endswith(". {}") and t.count("{}") == 1 for t in a[1:])
    assert all(t.startswith(opener) for t, opener in zip(a[1:], ["The", "Therefore", "Because", "I", "You"]))
    path = tmp_path / "a" / "context_templates" / f"{model_cache_name(tiny_llama)}.json"
    assert list(json.loads(path.read_text()).values()) == [a]

    def no_sampling(*args, **kwargs):
        raise AssertionError("templates should come from the cache file")

    monkeypatch.setattr(context_mod, "sample_texts", no_sampling)
    assert context_templates(tiny_llama, tokenizer, tmp_path / "a", ((6, 5),), seed=3) == a


# --------------------------------------------------------------------------- one real edit

def test_rome_smoke_edit_on_smollm2(smollm2, zsre_requests, tmp_path):
    """A real edit of the embedded model: the edit prompt reads v* exactly, so the target becomes the argmax."""
    from editprobe.benchmark.metrics import edit_accuracy

    model, tokenizer = smollm2
    request = zsre_requests[0]                                  # Epaspidoceras -> Noctuidae
    before = state_digest(model)
    pre = edit_accuracy(model, tokenizer, [request.prompt], [request.target])[0]
    editor = ROMEEditor(ROMEHparams(layers=(5,), mom2_adjustment=False, written_key="prompt", v_num_grad_steps=20,
                                    context_template_length_params=((4, 1),), cache_dir=str(tmp_path)))
    handle = editor.apply(model, tokenizer, [request])
    post = edit_accuracy(model, tokenizer, [request.prompt], [request.target])[0]
    assert pre < 1.0 and post == 1.0
    assert handle.touched == ["model.layers.5.mlp.down_proj.weight"]
    (edit,) = handle.diagnostics["edits"]
    assert edit["skipped_lower_layers"] is True and edit["nll_last"] < edit["nll_first"]
    handle.restore()
    assert state_digest(model) == before
