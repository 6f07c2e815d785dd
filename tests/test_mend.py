"""MEND (benchmark/editors/mend.py): the update rule by hand, the gradient decomposition, training, resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from editprobe.benchmark.editors.base import EditRequest, state_digest
from editprobe.benchmark.editors.layers import EditSite, mlp_sites
from editprobe.benchmark.editors.mend import (CHECKPOINT, PARTIAL, MENDEditor, MENDHparams, MENDNetworks,
                                              edit_sites, gradient_factors, read_training_edits, target_nll, train,
                                              weight_updates, _example_ids)
from tests.benchmark_fixtures import tiny_llama_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _toy_site(d_in=3, d_out=2) -> EditSite:
    layer = torch.nn.Linear(d_in, d_out, bias=False)
    return EditSite(0, "toy", layer, transposed=False)


def _set_stats(net, mean, std):
    """Running statistics that standardise with ``mean`` and ``std`` (count 2, so m2 = std^2)."""
    net.count.fill_(2.0)
    net.mean.copy_(torch.tensor(mean, dtype=torch.float64))
    net.m2.copy_(torch.tensor(std, dtype=torch.float64) ** 2)


def test_an_untrained_network_gives_the_standardised_rank_one_gradient_step():
    """A zero-initialised network is the identity, so dW = -alpha * delta~ u~^T with u~, delta~ the standardised
    factors. By hand, u = (1, 2, 3), delta = (0.5, -1), means 0 and standard deviations 1 for u and (0.5, 2) for
    delta, alpha 0.5: delta~ = (1, -0.5) and dW = -0.5 * [[1, 2, 3], [-0.5, -1, -1.5]]."""
    site = _toy_site()
    nets = MENDNetworks([site], MENDHparams(rank=4, n_hidden=1, edit_lr=0.5))
    _set_stats(nets.net("toy"), [0, 0, 0, 0, 0], [1, 1, 1, 0.5, 2])
    u, delta = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[0.5, -1.0]])
    dw = weight_updates(nets, {"toy": (u, delta)})["toy"]
    expected = torch.tensor([[-0.5, -1.0, -1.5], [0.25, 0.5, 0.75]])
    assert torch.allclose(dw, expected, atol=1e-5)
    # two token rows: the sum of their rank-one terms
    u2, d2 = torch.tensor([[1.0, 2.0, 3.0], [0.0, 1.0, 0.0]]), torch.tensor([[0.5, -1.0], [1.0, 0.0]])
    dw2 = weight_updates(nets, {"toy": (u2, d2)})["toy"]
    assert torch.allclose(dw2, expected + torch.tensor([[0.0, -1.0, 0.0], [0.0, 0.0, 0.0]]), atol=1e-5)


def test_a_trained_layer_transforms_the_factors_as_written():
    """One residual layer x + clamp(scale * (A B x + b) + shift, 0) on a 1-in, 1-out matrix (x = (u, delta)),
    with B = (1, 1), A = (1, -1)^T, b = 0, scale 1, shift 0, statistics (0, 1): x = (1, 2) gives A B x = (3, -3),
    clamped (3, 0), so (u~, delta~) = (4, 2) and dW = -alpha * 2 * 4 = -8 alpha (alpha 0.25: -2)."""
    site = _toy_site(1, 1)
    nets = MENDNetworks([site], MENDHparams(rank=1, n_hidden=0, edit_lr=0.25))
    net = nets.net("toy")
    _set_stats(net, [0, 0], [1, 1])
    with torch.no_grad():
        layer = net.layers[0]
        layer.B.copy_(torch.tensor([[1.0, 1.0]]))
        layer.A.copy_(torch.tensor([[1.0], [-1.0]]))
    dw = weight_updates(nets, {"toy": (torch.tensor([[1.0]]), torch.tensor([[2.0]]))})["toy"]
    assert torch.allclose(dw, torch.tensor([[-2.0]]))
    # a second matrix of the same shape shares the network but has its own scale and shift (its "mode")
    nets2 = MENDNetworks([_toy_site(1, 1), EditSite(1, "toy2", torch.nn.Linear(1, 1, bias=False), False)],
                         MENDHparams(rank=1, n_hidden=0))
    assert len(nets2.nets) == 1 and nets2.mode == {"toy": 0, "toy2": 1}


def test_the_captured_factors_sum_to_the_weight_gradient(tokenizer):
    """sum_t delta_t u_t^T over the captured rows equals autograd's dL/dW of every MLP matrix (the decomposition
    MEND rests on), and the model's weights get no .grad."""
    model = tiny_llama_model(tokenizer)
    sites = [s for layer in (1, 2) for s in mlp_sites(model, layer)]
    grads, loss = gradient_factors(model, tokenizer, sites, [("The capital of France is", "Paris")])
    ids, labels = _example_ids(tokenizer, "The capital of France is", "Paris", "cpu")
    reference = torch.autograd.grad(target_nll(model, ids, labels), [s.weight for s in sites])
    for s, g in zip(sites, reference):
        u, d = grads[s.name]
        assert u.shape[1] == s.d_in and d.shape[1] == s.d_out
        assert torch.allclose(d.T @ u, g, atol=1e-6), s.name
        assert s.weight.grad is None
    assert loss == pytest.approx(float(target_nll(model, ids, labels).detach()), rel=1e-6)


def _tiny_hp(tmp_path, **kw) -> MENDHparams:
    return MENDHparams(**{"rank": 8, "accumulate": 2, "train_steps": 2, "save_every": 1, "lr": 1e-2, "lr_lr": 1e-2,
                          "cache_dir": str(tmp_path / "cache"), **kw})


def _post_edit_nll(model, tokenizer, editor, examples) -> float:
    total = 0.0
    for ex in examples:
        handle = editor.apply(model, tokenizer, [EditRequest("x", ex.prompt, "", ex.target)])
        ids, labels = _example_ids(tokenizer, ex.outer, ex.target, "cpu")
        with torch.no_grad():
            total += float(target_nll(model, ids, labels))
        handle.restore()
    return total / len(examples)


def test_a_few_training_steps_lower_the_edit_loss_and_leave_the_model_alone(tokenizer, data_dir, tmp_path):
    """On a tiny model trained on four real CounterFact training records (cycled), the networks after 25 updates
    edit those records to a lower target NLL on their rephrasings than after 1 update. (A random 32-wide model
    can move a logit by well under a nat through its final norm and head, hence the small margin.) The base
    weights are bit-identical afterwards."""
    import json

    model = tiny_llama_model(tokenizer)
    before = state_digest(model)
    four = tmp_path / "four.json"
    four.write_text(json.dumps(json.loads((data_dir / "training" / "counterfact_train.json").read_text())[:4]))
    examples = read_training_edits(four)
    losses = {}
    for steps in (1, 25):
        hp = _tiny_hp(tmp_path, train_steps=steps, lr=1e-3, lr_lr=1e-3, train_data=str(four))
        path = train(model, tokenizer, hp, tmp_path / f"t{steps}", progress=None)
        losses[steps] = _post_edit_nll(model, tokenizer, MENDEditor(hp, checkpoint=str(path)), examples)
    assert state_digest(model) == before
    assert losses[25] < losses[1] - 0.3, losses


def test_an_interrupted_training_resumes_to_the_uninterrupted_result(tokenizer, data_dir, tmp_path):
    model = tiny_llama_model(tokenizer)
    hp = _tiny_hp(tmp_path, train_steps=5)
    full = torch.load(train(model, tokenizer, hp, tmp_path / "full", progress=None), weights_only=True)

    def stop_at_three(line):
        if "update 3/" in line:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(model, tokenizer, hp, tmp_path / "cut", progress=stop_at_three)
    assert torch.load(tmp_path / "cut" / PARTIAL, weights_only=True)["step"] == 2
    lines = []
    resumed = torch.load(train(model, tokenizer, hp, tmp_path / "cut", progress=lines.append), weights_only=True)
    assert lines[0].startswith("mend: resuming at update 2/5")
    assert not (tmp_path / "cut" / PARTIAL).exists()
    for name, t in full["networks"].items():
        assert torch.equal(t, resumed["networks"][name]), name
    with pytest.raises(ValueError, match="partial MEND training for other settings"):
        torch.save({"key": "0123456789abcdef", "step": 1}, tmp_path / "cut" / PARTIAL)
        train(model, tokenizer, hp, tmp_path / "cut", progress=None)


def test_the_editor_trains_on_first_use_into_the_cache_and_then_reuses_it(tokenizer, tmp_path):
    model = tiny_llama_model(tokenizer)
    editor = MENDEditor(_tiny_hp(tmp_path))
    said = []
    editor.progress = said.append
    request = EditRequest("1", "The capital of France is", "France", "Rome", "Paris")
    editor.apply(model, tokenizer, [request]).restore()
    assert "no trained networks" in said[0] and "about" in said[0] and "s/update" in said[1]
    found = list((tmp_path / "cache" / "mend").rglob(CHECKPOINT))
    assert len(found) == 1
    again = MENDEditor(_tiny_hp(tmp_path))
    again.progress = said.append
    n = len(said)
    handle = again.apply(model, tokenizer, [request])
    assert len(said) == n  # loaded, not trained
    assert handle.diagnostics["checkpoint_updates"] == 2 and len(handle.touched) == 9
    # a second edit on top (sequential mode) changes the weights the cache key hashes: it must not train again
    second = again.apply(model, tokenizer, [EditRequest("2", "The capital of Italy is", "Italy", "Paris", "Rome")])
    assert len(said) == n and len(list((tmp_path / "cache" / "mend").rglob(CHECKPOINT))) == 1
    second.restore()
    handle.restore()
    other_model = tiny_llama_model(tokenizer, seed=1)  # same shapes, other weights: not what the networks learned
    with pytest.raises(ValueError, match="trained for 'llama-.*', not for this model"):
        MENDEditor(_tiny_hp(tmp_path), checkpoint=str(found[0])).apply(other_model, tokenizer, [request])
    other = MENDEditor(_tiny_hp(tmp_path, cloc=0.5))  # another training setting: another key
    assert other.checkpoint_path(model, edit_sites(model, other.hparams))[0] != found[0]
    with pytest.raises(FileNotFoundError, match="train_if_missing"):
        MENDEditor(_tiny_hp(tmp_path, cloc=0.5, train_if_missing=False)).apply(model, tokenizer, [request])


def test_a_bad_training_record_is_named(tmp_path):
    bad = tmp_path / "train.json"
    bad.write_text('[{"prompt": "a", "target_new": "b", "locality_prompt": "c", "locality_ground_truth": "d"},'
                   ' {"prompt": "a", "target_new": "", "locality_prompt": "c", "locality_ground_truth": "d"}]')
    with pytest.raises(ValueError, match=r"train.json: record 1: field 'target_new'"):
        read_training_edits(bad)


def test_train_mend_resumes_after_kill_9(tokenizer, data_dir, tmp_path):
    """`editprobe train mend` on a tiny model saved to a folder: killed with SIGKILL after its first snapshot, the
    rerun resumes and writes the same networks as an uninterrupted run, and an hparams.yaml the editor can load."""
    folder = tmp_path / "tiny-llama"
    tiny_llama_model(tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    hp_file = tmp_path / "hp.yaml"
    hp_file.write_text(yaml.safe_dump({"rank": 8, "accumulate": 2, "train_steps": 30, "save_every": 1}))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def cmd(out):
        return [sys.executable, "-m", "editprobe.cli", "train", "mend", "--model", str(folder), "--hparams",
                str(hp_file), "--data-dir", str(data_dir), "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]

    proc = subprocess.Popen(cmd(tmp_path / "cut"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (tmp_path / "cut" / PARTIAL).exists():
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "cut" / CHECKPOINT).exists()
    rerun = subprocess.run(cmd(tmp_path / "cut"), env=env, capture_output=True, text=True, check=True)
    assert "mend: resuming at update" in rerun.stderr
    subprocess.run(cmd(tmp_path / "full"), env=env, capture_output=True, text=True, check=True)
    cut = torch.load(tmp_path / "cut" / CHECKPOINT, weights_only=True)
    full = torch.load(tmp_path / "full" / CHECKPOINT, weights_only=True)
    assert all(torch.equal(t, cut["networks"][k]) for k, t in full["networks"].items())
    settings = yaml.safe_load((tmp_path / "cut" / "hparams.yaml").read_text())
    assert settings["checkpoint"] == str((tmp_path / "cut").resolve()) and settings["train_steps"] == 30


def test_a_missing_training_file_or_checkpoint_is_an_error_before_any_model_loads(tmp_path):
    with pytest.raises(FileNotFoundError, match="field 'train_data'.*nothere.json does not exist"):
        MENDEditor(train_data=str(tmp_path / "nothere.json"))
    with pytest.raises(FileNotFoundError, match="field 'checkpoint': no MEND checkpoint at"):
        MENDEditor(checkpoint=str(tmp_path))
