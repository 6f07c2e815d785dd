"""The locate-then-edit linear algebra runs on one stated device and dtype, whatever device the statistics were
computed or loaded on, and half-precision models edit without dtype errors.

No GPU here: a torch-function mode fails every op whose tensor arguments sit on more than one device (what CUDA
does with a CPU tensor), and the ``meta`` device stands in for the accelerator.
"""

from __future__ import annotations

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from editprobe.benchmark.editors.alphaedit import (AlphaEditEditor, AlphaEditHparams, null_space_projector,
                                                   null_space_update)
from editprobe.benchmark.editors.base import state_digest
from editprobe.benchmark.editors.covariance import SecondMoment
from editprobe.benchmark.editors.memit import MEMITEditor, MEMITHparams, least_squares_update
from editprobe.benchmark.editors.rome import ROMEEditor, ROMEHparams, rank_one_update
from tests.benchmark_fixtures import fast_ls_hparams, tiny_llama_model


class OneDevice(TorchFunctionMode):
    """Raise on any torch call whose tensor arguments live on different devices (CUDA's rule, checked on CPU)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        devices = {t.device for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        if len(devices) > 1 and func not in (torch.Tensor.to, torch.Tensor.copy_):
            raise RuntimeError(f"{getattr(func, '__name__', func)} mixes devices {sorted(map(str, devices))}")
        return func(*args, **kwargs)


def test_the_mode_catches_what_cuda_would_reject():
    with OneDevice(), pytest.raises(RuntimeError, match="mixes devices"):
        torch.empty(3, 3, device="meta") @ torch.zeros(3, 3)     # plain torch lets this one through on meta


def test_update_formulas_move_statistics_to_the_keys_device():
    """Keys on the accelerator ('meta'), C / P / K_p K_p^T / R computed on the CPU, as the stats files are."""
    d_in, d_out, n = 6, 4, 2
    c = torch.eye(d_in, dtype=torch.float64) * 2
    with OneDevice():
        keys, resid = torch.empty(n, d_in, device="meta"), torch.empty(n, d_out)
        out = least_squares_update(keys, resid, c, 10.0)
        assert out.device.type == "meta" and out.dtype == torch.float64 and out.shape == (d_out, d_in)
        assert least_squares_update(keys, resid, None, 10.0).device.type == "meta"
        out = null_space_update(keys, resid, c, torch.zeros(d_in, d_in), 1.0)
        assert out.device.type == "meta" and out.shape == (d_out, d_in)
        delta, right, left = rank_one_update(torch.empty(d_in, device="meta"), torch.empty(d_out), torch.empty(d_out),
                                             c, key=torch.empty(d_in))
        assert {delta.device.type, right.device.type, left.device.type} == {"meta"}
    p, dim = null_space_projector(c, 3.0, device="cpu")
    assert dim == d_in and torch.allclose(p, torch.eye(d_in, dtype=torch.float64))


class _ForeignDevice(torch.Tensor):
    """A CPU tensor whose ``device`` reads 'meta' until it is moved with ``.to``: statistics sitting on a device
    other than the model's, with real values so the edit can finish and be checked."""

    @staticmethod
    def __new__(cls, data):
        return torch.Tensor._make_subclass(cls, data)

    @property
    def device(self):
        return torch.device("meta")

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        out = super().__torch_function__(func, types, args, kwargs or {})
        return out.as_subclass(torch.Tensor) if func is torch.Tensor.to and isinstance(out, torch.Tensor) else out


@pytest.mark.parametrize("cls,hparams,layers", [(ROMEEditor, ROMEHparams, (1,)), (MEMITEditor, MEMITHparams, (0, 1)),
                                                (AlphaEditEditor, AlphaEditHparams, (0, 1))])
def test_a_whole_edit_never_mixes_devices_when_the_stats_live_elsewhere(
        tokenizer, zsre_requests, tmp_path, monkeypatch, cls, hparams, layers):
    """C comes back on a foreign device: every op of the edit must move it to the model's device first."""
    model = tiny_llama_model(tokenizer, seed=3)
    real = SecondMoment.moment
    monkeypatch.setattr(SecondMoment, "moment", lambda self: _ForeignDevice(real(self)))
    extra = {"nullspace_threshold": 1.0} if cls is AlphaEditEditor else {}
    editor = cls(hparams(layers=layers, **fast_ls_hparams(tmp_path, **extra)))
    before = state_digest(model)
    with OneDevice():
        handle = editor.apply(model, tokenizer, zsre_requests[:1])
    assert state_digest(model) != before
    handle.restore()
    assert state_digest(model) == before


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("cls,hparams,layers", [(ROMEEditor, ROMEHparams, (1,)), (MEMITEditor, MEMITHparams, (0, 1)),
                                                (AlphaEditEditor, AlphaEditHparams, (0, 1))])
def test_half_precision_models_edit_and_restore(tokenizer, zsre_requests, tmp_path, dtype, cls, hparams,
                                                layers):
    model = tiny_llama_model(tokenizer, seed=4).to(dtype)
    extra = {"nullspace_threshold": 1.0} if cls is AlphaEditEditor else {}
    editor = cls(hparams(layers=layers, **fast_ls_hparams(tmp_path, **extra)))
    before = state_digest(model)
    handle = editor.apply(model, tokenizer, zsre_requests[:1])
    touched = dict(model.named_parameters())[handle.touched[0]]
    assert touched.dtype == dtype and torch.isfinite(touched).all() and state_digest(model) != before
    handle.restore()
    assert state_digest(model) == before
