"""Hyper-parameter classes shaped like EasyEdit's: dataclasses built from a YAML file whose alg_name must match."""

from dataclasses import dataclass

import yaml


@dataclass
class _FakeHyperParams:
    alg_name: str
    param_name: str
    delta: float = 1.0
    device: int = 0
    model_name: str = ""

    expected_alg = ""

    @classmethod
    def from_hparams(cls, path: str):
        with open(path, encoding="utf-8") as fh:
            config = yaml.safe_load(fh)
        if config.get("alg_name") != cls.expected_alg:
            raise ValueError(f"{cls.__name__} can not load from {path}, alg_name is {config.get('alg_name')}")
        return cls(**config)


@dataclass
class AddDeltaHyperParams(_FakeHyperParams):
    expected_alg = "ADD-DELTA"


@dataclass
class PATCHHyperParams(_FakeHyperParams):
    expected_alg = "PATCH"


@dataclass
class LEAKYHyperParams(_FakeHyperParams):
    expected_alg = "LEAKY"


@dataclass
class ROMEHyperParams(_FakeHyperParams):
    expected_alg = "ROME"


@dataclass
class AlphaEditHyperParams(_FakeHyperParams):
    expected_alg = "AlphaEdit"


@dataclass
class MENDHyperParams(_FakeHyperParams):
    expected_alg = "MEND"
