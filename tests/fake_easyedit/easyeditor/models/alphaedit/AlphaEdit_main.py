"""Fake AlphaEdit with EasyEdit's module-level key cache: ``cache_c`` grows with every edit and changes the next
one unless ``cache_c_new`` is set back to False (then it restarts from zero)."""

import torch

from ...hparams import AlphaEditHyperParams

cache_c = 0.0
cache_c_new = False


def apply_AlphaEdit_to_model(model, tok, requests, hparams, copy=False, return_orig_weights=False,
                             keep_original_weight=False, **kwargs):
    global cache_c, cache_c_new
    if not cache_c_new:
        cache_c = 0.0
        cache_c_new = True
    w = model.get_parameter(hparams.param_name)
    weights_copy = {hparams.param_name: w.detach().clone()} if return_orig_weights else {}
    with torch.no_grad():
        w += hparams.delta + cache_c  # an earlier edit's keys shift this one
    cache_c += 1.0
    return model, weights_copy


__all__ = ["AlphaEditHyperParams", "apply_AlphaEdit_to_model"]
