"""Many single edits measured in one batch: the per-row weight deltas by hand on a tiny model, and the batched run
against the one-at-a-time run on SmolLM2 and 8 real ZsRE records."""

import json
import shutil

import pytest
import torch

from editprobe.benchmark.multiedit import RowDeltas, capture_delta
from editprobe.benchmark.sampling import ActiveRows
from tests.benchmark_fixtures import build_zsre_set, light_task, tiny_llama_model


def test_each_row_sees_its_own_records_weights(tokenizer):
    """Rows 0-1 belong to record 0, rows 2-3 to record 1 (two rows a record): with the hooks, each row's logits
    equal those of a copy of the model whose weights carry that record's change (none for record 2)."""
    import copy

    model = tiny_llama_model(tokenizer, seed=3)
    names = ["model.layers.1.mlp.down_proj.weight", "model.layers.0.self_attn.o_proj.weight"]
    params = dict(model.named_parameters())
    gen = torch.Generator().manual_seed(0)
    deltas = [{names[0]: 0.1 * torch.randn(params[names[0]].shape, generator=gen)},
              {names[0]: 0.1 * torch.randn(params[names[0]].shape, generator=gen),
               names[1]: 0.1 * torch.randn(params[names[1]].shape, generator=gen)},
              {}]
    ids = torch.randint(0, len(tokenizer), (6, 7), generator=gen)

    def edited_logits(delta, rows):
        edited = copy.deepcopy(model)
        with torch.no_grad():
            for name, d in delta.items():
                dict(edited.named_parameters())[name].add_(d)
            return edited(input_ids=rows).logits

    expected = [edited_logits(delta, ids[2 * b:2 * b + 2]) for b, delta in enumerate(deltas)]
    only_one = edited_logits(deltas[1], ids[:2])
    active = ActiveRows(6, "cpu")
    hooks = RowDeltas(model, deltas, 2, active)
    try:
        with torch.no_grad():
            got = model(input_ids=ids).logits
            torch.testing.assert_close(got, torch.cat(expected), rtol=1e-5, atol=1e-5)
            active.rows = torch.tensor([2, 3, 4])          # rows leave: what is left still maps to its record
            got = model(input_ids=ids[2:5]).logits
            torch.testing.assert_close(got[:2], expected[1], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(got[2], expected[2][0], rtol=1e-5, atol=1e-5)
            with hooks.only(1):                          # teacher-forced probes: every row is record 1's
                torch.testing.assert_close(model(input_ids=ids[:2]).logits, only_one, rtol=1e-5, atol=1e-5)
    finally:
        hooks.remove()
    with torch.no_grad():
        plain = model(input_ids=ids).logits
    torch.testing.assert_close(plain[4:], expected[2])      # hooks removed: the model is the plain one


def test_capture_delta_is_the_weight_change(tokenizer, zsre_requests, tmp_path):
    from editprobe.benchmark.editors.rome import ROMEEditor, ROMEHparams
    from tests.benchmark_fixtures import fast_ls_hparams

    model = tiny_llama_model(tokenizer, seed=4)
    name = "model.layers.1.mlp.down_proj.weight"
    before = dict(model.named_parameters())[name].detach().clone()
    handle = ROMEEditor(ROMEHparams(layers=(1,), mom2_adjustment=False, **fast_ls_hparams(tmp_path))).apply(
        model, tokenizer, zsre_requests[:1])
    after = dict(model.named_parameters())[name].detach().clone()
    delta = capture_delta(model, handle)
    handle.restore()
    assert list(delta) == [name] and torch.equal(delta[name], after - before)
    assert torch.linalg.matrix_rank(delta[name].double(), rtol=1e-6) == 1      # ROME writes a rank-one change


@pytest.mark.model
def test_eight_batched_edits_equal_the_one_at_a_time_run(data_dir, tmp_path):
    """ROME (cheap settings) on 8 records: measured one at a time and all 8 in one batch (pre-edit passes batched
    across records, post-edit passes with per-row edits), the samples are the same and every statistic agrees to
    float rounding."""
    from editprobe.benchmark.runner import RunConfig, run
    from editprobe.models import smollm2_local_copy
    from editprobe.paths import default_cache_dir

    smollm2_local_copy(default_cache_dir())
    task = light_task(tmp_path, build_zsre_set(data_dir, tmp_path / "pset", n=8), max_new_tokens=12)
    hparams = tmp_path / "rome.yaml"
    hparams.write_text("layers: [5]\nmom2_adjustment: false\nv_num_grad_steps: 3\ncontext_template_length_params: []\n"
                       "written_key: prompt\n")
    docs, lines = {}, {}
    for batch in (1, 8):   # the targets optimised one at a time in both: the measurement is what is compared
        shutil.rmtree(tmp_path / "cache" / "pre_edit", ignore_errors=True)   # both runs sample their pre-edit pass
        out = tmp_path / f"b{batch}"
        docs[batch] = run(RunConfig(task=str(task), editor="rome", output_dir=out, hparams=hparams,
                                    cache_dir=tmp_path / "cache", edit_batch=batch, target_batch=1), progress=False)
        lines[batch] = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert docs[8]["provenance"]["edit_batch"] == 8 and docs[1]["provenance"]["edit_batch"] == 1
    assert [x["id"] for x in lines[8]] == [x["id"] for x in lines[1]] and len(lines[1]) == 8
    for one, many in zip(lines[1], lines[8]):
        assert one["status"] == many["status"] == "ok"
        assert many["post"]["responses"] == one["post"]["responses"]
        assert many["pre"]["responses"] == one["pre"]["responses"]
        for key in ("U", "U_alea", "U_epis", "fluency"):
            assert many["post"][key] == pytest.approx(one["post"][key], rel=1e-6, abs=1e-9), key
        for key in ("reliability", "generalization", "portability", "locality"):
            assert many["post"][key] == pytest.approx(one["post"][key], abs=1e-9), key
    assert any(x["post"]["responses"] != x["pre"]["responses"] for x in lines[8])   # the edits changed answers
    for key in ("U", "U_alea", "U_epis"):
        assert docs[8]["uncertainty"][key]["delta_u"]["value"] == pytest.approx(
            docs[1]["uncertainty"][key]["delta_u"]["value"], rel=1e-6, abs=1e-9)
    # the same 8 edits with their 8 target vectors optimised in one batch: each v* as if alone, up to float
    # rounding (Adam divides by the gradient's own size, so rounding in near-zero components is not damped), so
    # the statistics agree closely and the samples but for near-ties
    out = tmp_path / "t8"
    doc = run(RunConfig(task=str(task), editor="rome", output_dir=out, hparams=hparams, cache_dir=tmp_path / "cache",
                        edit_batch=8, target_batch=8), progress=False)
    batched = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert doc["provenance"]["target_batch"] == 8 and docs[8]["provenance"]["target_batch"] == 1
    same_rows = total_rows = 0
    for one, many in zip(lines[1], batched):
        (e1,), (e8,) = one["edit"]["diagnostics"]["edits"], many["edit"]["diagnostics"]["edits"]
        assert (e1["v_batch"], e8["v_batch"]) == (1, 8) and e8["v_steps"] == e1["v_steps"]
        assert e8["v_delta_norm"] == pytest.approx(e1["v_delta_norm"], rel=1e-3)
        assert e8["nll_last"] == pytest.approx(e1["nll_last"], rel=1e-3)
        assert many["post"]["reliability"] == pytest.approx(one["post"]["reliability"], abs=1e-3)
        for a, b in zip(one["post"]["responses"], many["post"]["responses"]):
            same_rows += sum(x == y for x, y in zip(a, b))
            total_rows += len(a)
    assert total_rows >= 8 * 6 and same_rows >= 0.9 * total_rows, (same_rows, total_rows)   # 95 of 96 seen
