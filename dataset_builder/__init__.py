"""dataset_builder: real editing benchmarks -> the six-level perturbation set (a Hugging Face dataset)."""

from editprobe import __version__ as BUILDER_VERSION

__all__ = ["BUILDER_VERSION"]
