"""Editor registry, hyper-parameter loading and bit-exact restore."""

import textwrap

import pytest
import torch

from benchmark.editors import EditRequest, build_editor, editor_class
from benchmark.editors.base import EditHandle, RestoreError, load_hparams, state_digest
from benchmark.editors.ft import FTEditor, FTHparams


@pytest.fixture(scope="module")
def smollm2():
    from editprobe.models import load_model

    model, tokenizer, _ = load_model()
    return model, tokenizer


def test_registry_names_and_targets():
    assert editor_class("ft") is FTEditor
    assert editor_class("benchmark.editors.ft:FTEditor") is FTEditor
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
    editor = build_editor("ft", model_family="smollm2-135m")
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
        from benchmark.editors.base import EditHandle, Editor

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
