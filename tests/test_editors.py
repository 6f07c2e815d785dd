"""Editor registry, hyper-parameter loading and bit-exact restore."""

import dataclasses
import textwrap

import pytest
import torch

from editprobe.benchmark.editors import EditRequest, build_editor, editor_class
from editprobe.benchmark.editors.base import EditHandle, RestoreError, load_hparams, state_digest
from editprobe.benchmark.editors.ft import FTEditor, FTHparams


def test_registry_names_and_targets():
    assert editor_class("ft") is FTEditor
    assert editor_class("editprobe.benchmark.editors.ft:FTEditor") is FTEditor
    with pytest.raises(ValueError, match="unknown editor 'rome2'.*noop"):
        editor_class("rome2")


def test_hparams_yaml_typed_and_strict(tmp_path):
    good = tmp_path / "ft.yaml"
    good.write_text("layers: [3, 4]\nlr: 0.01\n")
    hp = load_hparams(FTHparams, good)
    assert hp.layers == (3, 4) and hp.lr == 0.01 and hp.num_steps == FTHparams().num_steps
    bad = tmp_path / "bad.yaml"
    bad.write_text("layer: 3\n")
    with pytest.raises(ValueError, match=r"bad.yaml: unknown hyper-parameter\(s\) layer"):
        load_hparams(FTHparams, bad)


def test_preset_for_the_embedded_default():
    editor = build_editor("ft", preset="smollm2-135m")
    assert editor.hparams.layers == (8,) and editor.hparams.norm_constraint is None


def test_ft_edits_then_restores_every_weight_bit_exactly(smollm2):
    model, tokenizer = smollm2
    before = state_digest(model)
    editor = FTEditor(FTHparams(layers=(8,), num_steps=3, lr=1e-3, norm_constraint=None))
    request = EditRequest("r0", "Which family does Epaspidoceras belong to?", "Epaspidoceras", "Noctuidae")
    handle = editor.apply(model, tokenizer, [request])
    assert handle.touched == ["model.layers.8.mlp.down_proj.weight"]
    assert handle.diagnostics["delta_norm"]["model.layers.8.mlp.down_proj.weight"] > 0
    assert state_digest(model) != before
    handle.restore()
    assert state_digest(model) == before
    assert all(not p.requires_grad or p.grad is None for p in model.parameters())


def test_ft_norm_constraint_bounds_every_weight(smollm2):
    model, tokenizer = smollm2
    w = model.model.layers[8].mlp.down_proj.weight
    w0 = w.detach().clone()
    handle = FTEditor(FTHparams(num_steps=3, lr=1e-2, norm_constraint=1e-4)).apply(
        model, tokenizer, [EditRequest("r0", "The capital of France is", "France", "Lyon")])
    # float32: w0 ± 1e-4 is rounded to the nearest representable value (ulp of |w| <= 0.5 is 6e-8)
    assert float((w.detach() - w0).abs().max()) <= 1e-4 + 1e-7
    handle.restore()
    assert torch.equal(w.detach(), w0)


def test_restore_detects_a_changed_original():
    layer = torch.nn.Linear(2, 2)
    handle = EditHandle(layer, ["weight"])
    handle._originals["weight"] = handle._originals["weight"] + 1  # simulate a corrupted copy
    with pytest.raises(RestoreError, match="weight differs"):
        handle.restore()


def test_third_party_editor_by_module_target(tmp_path, monkeypatch):
    (tmp_path / "my_editor.py").write_text(textwrap.dedent("""
        from dataclasses import dataclass
        from editprobe.benchmark.editors.base import EditHandle, Editor

        @dataclass(frozen=True)
        class Hp:
            scale: float = 1.0

        class Mine(Editor):
            name = "mine"
            Hparams = Hp
            def apply(self, model, tokenizer, requests):
                return EditHandle(model, [])
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    editor = build_editor("my_editor:Mine")
    assert editor.hparams_dict() == {"scale": 1.0}


def test_the_run_cache_root_reaches_caching_editors_but_not_their_recorded_hparams(tmp_path):
    editor = build_editor("rome", preset="smollm2-135m", cache_dir=tmp_path)
    assert editor.cache_dir == tmp_path and editor.stats_dir == tmp_path / "stats"
    assert editor.hparams_dict()["cache_dir"] is None              # a location is not a hyper-parameter
    own = build_editor("rome", preset="smollm2-135m", cache_dir=tmp_path)
    own.hparams = dataclasses.replace(own.hparams, cache_dir=str(tmp_path / "mine"))
    assert own.cache_dir == tmp_path / "mine"                      # an explicit hyper-parameter wins


def test_presets_come_from_the_model_table_or_an_explicit_choice(tmp_path):
    """The 7-8B presets are picked up by model id; a local copy by its folder name; anything else is an error
    naming what exists, never a silent fallback to the dataclass defaults."""
    from editprobe.benchmark.editors import DEFAULTS, choose_hparams, model_presets, presets

    table = model_presets()
    assert table["meta-llama/Llama-2-7b-hf"] == "llama2-7b" and table["Qwen/Qwen2.5-7B-Instruct"] == "qwen2.5-7b"
    assert all(preset in presets("rome") for preset in set(table.values()))       # every entry exists
    assert choose_hparams("rome", "meta-llama/Meta-Llama-3-8B-Instruct").preset == "llama3-8b"
    assert choose_hparams("memit", "smollm2-135m-instruct").preset == "smollm2-135m"
    local = tmp_path / "weights" / "Llama-2-7b-hf"
    local.mkdir(parents=True)
    assert choose_hparams("alphaedit", str(local)).preset == "llama2-7b"
    with pytest.raises(ValueError, match=r"no preset for model 'someone/other-7b' .*--preset NAME .*llama2-7b"):
        choose_hparams("rome", "someone/other-7b")
    with pytest.raises(ValueError, match=r"editor 'ft' has no preset 'llama2-7b' \(it has: ft-l-easyedit, ft-m-easyedit, gemma-3-270m, smollm2-135m\)"):
        choose_hparams("ft", "meta-llama/Llama-2-7b-hf")
    assert choose_hparams("rome", "someone/other-7b", preset=DEFAULTS).preset == DEFAULTS
    assert choose_hparams("noop", "someone/other-7b") == choose_hparams("null", "x")      # nothing to choose
    assert choose_hparams("rome", "x", hparams_file=tmp_path / "h.yaml").hparams_file == str(tmp_path / "h.yaml")
    with pytest.raises(ValueError, match="not both"):
        choose_hparams("rome", "x", hparams_file=tmp_path / "h.yaml", preset="llama2-7b")
    rome = build_editor("rome", preset="llama2-7b")
    assert rome.hparams.written_key == "prompt" and rome.hparams.mom2_adjustment is False   # the file, not defaults


@pytest.mark.parametrize("text, message", [
    ("objective: target", "field 'objective' must be one of target_new, prompt_last_all, prompt_last, got 'target'"),
    ("num_steps: 0", r"field 'num_steps' must lie in \[1, inf\], got 0"),
    ("lr: -1", r"field 'lr' must lie in \(0, inf\], got -1"),
    ("layers: 3", "field 'layers' must be a list of values, each an integer, got 3"),
    ("norm_constraint: fast", "field 'norm_constraint' must be a number or null, got 'fast'"),
    ("[1, 2]", "expected a mapping of hyper-parameter names to values"),
    ("a: [1", "not valid YAML"),
])
def test_hparams_values_are_checked_with_one_line_naming_file_and_field(tmp_path, text, message):
    path = tmp_path / "ft.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ValueError, match=rf"^{tmp_path}/ft.yaml: {message}"):
        load_hparams(FTHparams, path)


def test_ft_prompt_last_all_is_easyedits_ft_l_loss(smollm2):
    """EasyEdit's FT-L reads every target token at the prompt's last position: the first loss is
    -mean_j log softmax(logits[last])[t_j], computed here directly from the unedited model."""
    from editprobe.benchmark.metrics import target_token_ids

    model, tokenizer = smollm2
    request = EditRequest("r0", "Which family does Epaspidoceras belong to?", "Epaspidoceras", "Noctuidae")
    prompt_ids, target_ids = target_token_ids(tokenizer, request.prompt, request.target)
    assert len(target_ids) > 1  # several target tokens, all scored at one position
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([prompt_ids])).logits[0, -1].float(), -1)
    expected = -float(logp[target_ids].mean())
    before = state_digest(model)
    handle = FTEditor(FTHparams(layers=(8,), objective="prompt_last_all", num_steps=5, lr=1e-3,
                                norm_constraint=None)).apply(model, tokenizer, [request])
    d = handle.diagnostics
    assert d["loss_first"] == pytest.approx(expected, rel=1e-5)
    assert d["loss_last"] < d["loss_first"]
    handle.restore()
    assert state_digest(model) == before


def test_easyedit_ft_presets_say_what_they_are():
    ft_l, ft_m = build_editor("ft", preset="ft-l-easyedit"), build_editor("ft", preset="ft-m-easyedit")
    assert (ft_l.hparams.objective, ft_m.hparams.objective) == ("prompt_last_all", "target_new")
    for editor in (ft_l, ft_m):  # EasyEdit's hparams/FT/llama-7b.yaml
        hp = editor.hparams
        assert (hp.layers, hp.num_steps, hp.lr, hp.norm_constraint, hp.early_stop_loss) == ((21,), 25, 5e-4, None, 1e-2)
