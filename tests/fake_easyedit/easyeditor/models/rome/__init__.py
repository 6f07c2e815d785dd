"""Fake ROME: the ADD-DELTA contract (the tokenizer's padding side at call time is recorded)."""

from ...hparams import ROMEHyperParams
from ...util.alg_dict import apply_add_delta_to_model as apply_rome_to_model

__all__ = ["ROMEHyperParams", "apply_rome_to_model"]
