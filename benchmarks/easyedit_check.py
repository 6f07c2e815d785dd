"""Check the ``easyedit:<ALG>`` adapter against a real EasyEdit checkout on the embedded SmolLM2 (CPU).

    .venv/bin/python benchmarks/easyedit_check.py --easyedit-path /path/to/EasyEdit [--alg ROME] [--record 0]

Writes a SmolLM2 hyper-parameter YAML for the method (ROME's layer-5 settings, no covariance adjustment, so no
Wikipedia statistics are needed), edits one ZsRE record through the adapter, and prints: the EasyEdit commit,
the padding side after the call, the parameters changed, the target's teacher-forced log-probability before
and after, and whether restore was bit-exact. ``--padding left`` skips the adapter's right-padding set-up, to
see what EasyEdit's ROME does with editprobe's own padding. Needs EasyEdit's source only (its package
``__init__`` is never imported), not its requirements file.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

import torch
import yaml

SMOLLM2_ROME = {
    "model_name": "SmolLM2-135M-Instruct", "device": "cpu", "layers": [5], "fact_token": "subject_last",
    "v_num_grad_steps": 25, "v_lr": 0.5, "v_loss_layer": 29, "v_weight_decay": 1e-3, "clamp_norm_factor": 4,
    "kl_factor": 0.0625, "mom2_adjustment": False, "context_template_length_params": [[5, 10], [10, 10]],
    "rewrite_module_tmp": "model.layers.{}.mlp.down_proj", "layer_module_tmp": "model.layers.{}",
    "mlp_module_tmp": "model.layers.{}.mlp", "attn_module_tmp": "model.layers.{}.self_attn",
    "ln_f_module": "model.norm", "lm_head_module": "lm_head", "mom2_dataset": "wikipedia",
    "mom2_n_samples": 100000, "mom2_dtype": "float32", "model_parallel": False,
}


def main() -> None:
    from editprobe.benchmark.editors import EditRequest
    from editprobe.benchmark.editors import easyedit as adapter
    from editprobe.benchmark.editors.base import state_digest
    from editprobe.dataset_builder.sources import convert_file
    from editprobe.models import load_model
    from editprobe.paths import default_data_dir

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--easyedit-path", required=True, help="root of a zjunlp/EasyEdit checkout")
    ap.add_argument("--alg", default="ROME")
    ap.add_argument("--record", type=int, default=0, help="index of the ZsRE record to edit")
    ap.add_argument("--padding", choices=["easyedit", "left"], default="easyedit")
    args = ap.parse_args()

    commit = subprocess.run(["git", "-C", args.easyedit_path, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "unknown (not a git checkout)"
    model, tok, _ = load_model()
    r = convert_file(default_data_dir() / "knowedit" / "zsre_test.json").records[args.record]
    request = EditRequest(record_id=r["id"], prompt=r["prompt"], subject=r["subject"], target=r["alt"],
                          ground_truth=r["answer"])

    def target_logprob() -> float:
        ids = tok(r["prompt"] + " " + r["alt"], return_tensors="pt").input_ids
        n = len(tok(" " + r["alt"]).input_ids)
        with torch.no_grad():
            logp = model(ids).logits.log_softmax(-1)[0, -n - 1:-1]
        return float(logp.gather(-1, ids[0, -n:, None]).sum())

    if args.padding == "left":
        adapter.easyedit_padding_side = lambda *_: None
    with tempfile.TemporaryDirectory() as tmp:
        hparams_file = Path(tmp) / f"{args.alg}.yaml"
        hparams_file.write_text(yaml.safe_dump({"alg_name": args.alg, "stats_dir": str(Path(tmp) / "stats"),
                                                **SMOLLM2_ROME}), encoding="utf-8")
        editor = adapter.easyedit_editor(args.alg)(adapter.EasyEditHparams(hparams_file=str(hparams_file),
                                                                           easyedit_path=args.easyedit_path))
        before, logp_before = state_digest(model), target_logprob()
        started = time.time()
        handle = editor.apply(model, tok, [request])
        seconds = time.time() - started
        logp_after = target_logprob()
        handle.restore()
    print(f"EasyEdit {commit}, easyedit:{args.alg}, padding {args.padding}, record {r['id']} "
          f"({r['prompt']!r} -> {r['alt']!r})")
    print(f"  edit {seconds:.1f} s; changed {', '.join(handle.diagnostics['changed'])}; tokenizer padding after "
          f"the call: {tok.padding_side}")
    print(f"  log p(target) {logp_before:.2f} -> {logp_after:.2f}; restore bit-exact: {state_digest(model) == before}")


if __name__ == "__main__":
    main()
