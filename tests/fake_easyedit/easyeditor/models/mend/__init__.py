"""Fake MEND: EasyEdit's ALG_DICT holds one executor for the whole process; ``INSTANCES`` counts how many exist."""

import torch

from ...hparams import MENDHyperParams

INSTANCES = []


class MendRewriteExecutor:
    def __init__(self):
        INSTANCES.append(self)
        self.edits = 0

    def apply_to_model(self, model, tok, requests, hparams, copy=False, return_orig_weights=False,
                       keep_original_weight=False, **kwargs):
        self.edits += 1
        w = model.get_parameter(hparams.param_name)
        weights_copy = {hparams.param_name: w.detach().clone()} if keep_original_weight else {}
        with torch.no_grad():
            w += hparams.delta * self.edits  # a reused executor would scale a later edit
        return model, weights_copy


__all__ = ["MENDHyperParams", "MendRewriteExecutor", "INSTANCES"]
