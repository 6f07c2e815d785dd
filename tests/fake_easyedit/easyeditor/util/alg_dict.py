"""ALG_DICT with three toy algorithms that follow EasyEdit's calling convention and return shapes."""

from copy import deepcopy

import torch

CALLS: list[dict] = []


def _record(name, requests, kwargs, tok=None):
    CALLS.append({"alg": name, "requests": deepcopy(requests), **kwargs,
                  "padding_side": getattr(tok, "padding_side", None)})


def apply_add_delta_to_model(model, tok, requests, hparams, copy=False, return_orig_weights=False,
                             keep_original_weight=False, **kwargs):
    """Adds hparams.delta to every entry of one parameter; returns (model, weights_copy) like ROME or MEND."""
    _record("ADD-DELTA", requests, dict(copy=copy, return_orig_weights=return_orig_weights,
                                        keep_original_weight=keep_original_weight, **kwargs), tok)
    if copy:
        model = deepcopy(model)
    weights_copy = {}
    w = model.get_parameter(hparams.param_name)
    with torch.no_grad():
        if return_orig_weights:
            weights_copy[hparams.param_name] = w.detach().clone()
        w += hparams.delta
    if not keep_original_weight:  # MEND's executor does this
        weights_copy = {}
    return model, weights_copy


def apply_patch_to_model(model, tok, requests, hparams, copy=False, return_orig_weights=False,
                         keep_original_weight=False, **kwargs):
    """Scales column 0 of one parameter by (1 + delta); returns (model, unpatch) like KN."""
    _record("PATCH", requests, dict(copy=copy, return_orig_weights=return_orig_weights,
                                    keep_original_weight=keep_original_weight, **kwargs))
    w = model.get_parameter(hparams.param_name)
    saved = w[:, 0].detach().clone()
    with torch.no_grad():
        w[:, 0] *= 1 + hparams.delta

    def unpatch():
        with torch.no_grad():
            w[:, 0] = saved

    return model, unpatch


def apply_leaky_to_model(model, tok, requests, hparams, copy=False, return_orig_weights=False,
                         keep_original_weight=False, **kwargs):
    """Changes the named parameter (reported) and the final norm's weight (not reported)."""
    _record("LEAKY", requests, dict(copy=copy, return_orig_weights=return_orig_weights,
                                    keep_original_weight=keep_original_weight, **kwargs))
    w = model.get_parameter(hparams.param_name)
    weights_copy = {hparams.param_name: w.detach().clone()}
    with torch.no_grad():
        w += hparams.delta
        model.get_parameter("model.norm.weight").add_(hparams.delta)
    return model, weights_copy


ALG_DICT = {
    "ADD-DELTA": apply_add_delta_to_model,
    "PATCH": apply_patch_to_model,
    "LEAKY": apply_leaky_to_model,
}
