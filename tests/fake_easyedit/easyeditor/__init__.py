"""Fake EasyEdit package (see ../README.md): ALG_DICT and hyper-parameter classes with from_hparams."""

from .hparams import AddDeltaHyperParams, LEAKYHyperParams, PATCHHyperParams, ROMEHyperParams
from .util.alg_dict import ALG_DICT, CALLS

__all__ = ["ALG_DICT", "CALLS", "AddDeltaHyperParams", "LEAKYHyperParams", "PATCHHyperParams", "ROMEHyperParams"]
