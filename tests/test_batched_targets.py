"""ROME's v* and MEMIT's z* of several edits optimised in one batch: each request as if optimised alone.

The reference for every comparison is the one-request path (the reference implementations' loop), run on the
same model; the batched path may differ from it only by float rounding (longer padding, sums over more rows).
"""

import dataclasses

import pytest
import torch

from editprobe.benchmark.editors import EditRequest
from editprobe.benchmark.editors.layers import decoder_blocks, edit_site, resolve_layout
from editprobe.benchmark.editors.memit import MEMITEditor, MEMITHparams
from editprobe.benchmark.editors.rome import ROMEEditor, ROMEHparams, optimise_target, optimise_targets
from editprobe.benchmark.multiedit import capture_delta
from tests.benchmark_fixtures import fast_ls_hparams, tiny_llama_model

pytestmark = pytest.mark.usefixtures("one_thread")

TEMPLATES = ["{}", "Some context. {}", "A much longer piece of context comes first. {}"]
# On a tiny random model ROME's weight decay (over ||v_init||^2, small there) would swamp the NLL, which moves
# little: without it the loss follows the NLL, so early stopping can split the requests (the editor tests run the
# decay term).
LIVELY = dict(v_num_grad_steps=12, v_lr=1.0, kl_factor=0.1, v_weight_decay=0.0, clamp_norm_factor=50.0)


@pytest.fixture(scope="module")
def model(tokenizer):
    return tiny_llama_model(tokenizer)


@pytest.fixture(scope="module")
def model64(tokenizer):
    """The same tiny model in float64: what is left of a difference there is the float32 optimiser state."""
    return tiny_llama_model(tokenizer).double()


def _alone(model, tokenizer, requests, insert_at, layer, hp):
    layout = resolve_layout(model)
    return [optimise_target(model, tokenizer, r, TEMPLATES, insert_at, layer, layout, hp) for r in requests]


def _mixed_stopping(model, tokenizer, requests, insert_at, layer, hp):
    """An early-stop threshold at which, each optimised alone, one request stops after some steps while another
    runs to the end (so the batch must freeze the first while the other goes on); found by trying the NLLs the
    requests pass through."""
    full = _alone(model, tokenizer, requests, insert_at, layer, hp)
    last = hp.v_num_grad_steps
    for threshold in sorted({x for v in full for x in v.nll[1:]}):
        trial = dataclasses.replace(hp, v_early_stop_loss=threshold * (1 + 1e-5))
        alone = _alone(model, tokenizer, requests, insert_at, layer, trial)
        steps = [v.steps for v in alone]
        if any(1 < s < last for s in steps) and last in steps:
            return trial, alone
    raise AssertionError("no threshold separates the requests' stopping steps")


@pytest.mark.parametrize("where", ["rome_mlp_output", "memit_block_output"])
def test_a_batch_of_targets_equals_each_optimised_alone(model64, tokenizer, zsre_requests, where):
    model = model64
    layout = resolve_layout(model)
    if where == "rome_mlp_output":
        site = edit_site(model, 1)
        insert_at, layer = site.module, site.layer
        hp = ROMEHparams(**LIVELY)
    else:
        layer = 1                                    # MEMIT's last edited block; block 2 runs above it
        insert_at = decoder_blocks(model, layout)[layer]
        hp = MEMITHparams(**LIVELY)
    requests = zsre_requests[:4]                     # prompts and targets of different lengths
    hp, alone = _mixed_stopping(model, tokenizer, requests, insert_at, layer, hp)
    together = optimise_targets(model, tokenizer, requests, TEMPLATES, insert_at, layer, layout, hp)
    assert [v.steps for v in together] == [v.steps for v in alone]
    assert len({v.steps for v in alone}) > 1 and all(v.batch == 4 for v in together)
    for one, many in zip(alone, together):
        torch.testing.assert_close(many.init, one.init, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(many.value, one.value, rtol=1e-4, atol=1e-5)
        assert many.nll == pytest.approx(one.nll, rel=1e-4)
        assert many.loss_last == pytest.approx(one.loss_last, rel=1e-4)
        assert many.delta_norm > 0


def test_extra_loss_is_refused_for_a_batch(model, tokenizer, zsre_requests):
    site = edit_site(model, 1)
    with pytest.raises(ValueError, match="one request at a time"):
        optimise_targets(model, tokenizer, zsre_requests[:2], TEMPLATES, site.module, 1, resolve_layout(model),
                         ROMEHparams(v_num_grad_steps=2), extra_loss=lambda d, v: d.sum())


def test_memit_batch_edit_with_batched_targets_writes_the_same_update(model, tokenizer, zsre_requests, tmp_path):
    hp = MEMITHparams(layers=(1, 2), mom2_adjustment=False, **{**fast_ls_hparams(tmp_path), "v_num_grad_steps": 6})
    updates = {}
    for size in (1, 3):
        editor = MEMITEditor(hp)
        editor.target_batch = size
        handle = editor.apply(model, tokenizer, zsre_requests[:3])
        updates[size] = capture_delta(model, handle)
        assert handle.diagnostics["z_batch"] == [size] * 3
        handle.restore()
    assert updates[1].keys() == updates[3].keys()
    for name in updates[1]:
        torch.testing.assert_close(updates[3][name], updates[1][name], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("layers", [(1,), (0, 1)])
def test_prepared_targets_serve_single_edits_as_computed_alone(model, tokenizer, zsre_requests, tmp_path, layers):
    """Inside ``batched_targets`` each record's own apply uses its prepared first target; a second ROME layer
    (optimised after the first layer's write) is computed in the apply as always. The edits equal those made
    outside the block."""
    requests = zsre_requests[:3]
    hp = ROMEHparams(layers=layers, mom2_adjustment=False, **{**fast_ls_hparams(tmp_path), "v_num_grad_steps": 6})
    editor = ROMEEditor(hp)

    def edits():
        out = []
        for r in requests:
            handle = editor.apply(model, tokenizer, [r])
            out.append((capture_delta(model, handle), [e["v_batch"] for e in handle.diagnostics["edits"]]))
            handle.restore()
        return out

    alone = edits()
    editor.target_batch = 3
    with editor.batched_targets(model, tokenizer, requests) as timing:
        together = edits()
    assert timing.seconds > 0 and editor._ready == {}
    for (d1, b1), (d3, b3) in zip(alone, together):
        assert b1 == [1] * len(layers) and b3 == [3] + [1] * (len(layers) - 1)
        for name in d1:
            torch.testing.assert_close(d3[name], d1[name], rtol=1e-4, atol=1e-6)


def test_a_request_that_cannot_be_batched_fails_alone(model, tokenizer, zsre_requests, tmp_path, caplog):
    bad = EditRequest("bad", "Who wrote it?", "a subject that is not in the prompt", "Nobody")
    editor = ROMEEditor(ROMEHparams(layers=(1,), mom2_adjustment=False, **fast_ls_hparams(tmp_path)))
    editor.target_batch = 2
    with editor.batched_targets(model, tokenizer, [zsre_requests[0], bad]):
        assert editor._ready == {}
        handle = editor.apply(model, tokenizer, [zsre_requests[0]])
        assert handle.diagnostics["edits"][0]["v_batch"] == 1
        handle.restore()
        with pytest.raises(ValueError, match="does not occur"):
            editor.apply(model, tokenizer, [bad])
    assert "no batched targets for 2 requests" in caplog.text
