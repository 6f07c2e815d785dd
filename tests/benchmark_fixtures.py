"""A small perturbation set built from real ZsRE records and the committed paraphrase file, and a light task."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from editprobe.dataset_builder.hf_dataset import write_dataset
from editprobe.dataset_builder.sources import convert_file
from editprobe.resources import release_dir, tasks_dir

RELEASE = release_dir()


def build_zsre_set(data_dir: Path, out: Path, n: int = 6) -> Path:
    records = convert_file(data_dir / "knowedit" / "zsre_test.json").records[:n]
    paraphrases = {json.loads(line)["id"]: json.loads(line) for line in (RELEASE / "zsre.paraphrases.jsonl").read_text().splitlines()}
    for r in records:
        r["generated_questions"] = paraphrases[r["id"]]["paraphrases"]
        r["topic"] = paraphrases[r["id"]]["topic"]  # hand-checked label
    write_dataset(out, {"zsre": {"test": records}}, "test fixture\n")
    return out


def light_task(tmp: Path, dataset: Path, **uncertainty) -> Path:
    """tasks/zsre.yaml with shorter sampling (fewer tokens, K=2) so mechanics tests run in seconds."""
    spec = yaml.safe_load((tasks_dir() / "zsre.yaml").read_text())
    spec["name"] = "zsre_light"
    spec["dataset"]["path"] = str(dataset)
    spec["uncertainty"].update({"max_new_tokens": 8, "samples_per_paraphrase": 2, "bootstrap": 200, **uncertainty})
    path = tmp / "zsre_light.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def tiny_llama_model(tokenizer, seed: int = 0, layers: int = 3):
    """A randomly initialised 3-layer LLaMA (hidden 32, MLP 64) with ``tokenizer``'s vocabulary: the locate-then-edit
    editors' algebra at a size that runs in milliseconds."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(attn_implementation="eager", vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=128, bos_token_id=None, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    return LlamaForCausalLM(config).eval()


def fast_ls_hparams(cache, **kw) -> dict:
    """Hyper-parameters small enough for a tiny model: the bare prompt only, 2 optimisation steps, 16 texts."""
    return dict(v_num_grad_steps=2, context_template_length_params=(), mom2_n_samples=16, mom2_sample_tokens=16,
                cache_dir=str(cache), **kw)
