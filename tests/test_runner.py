"""The runner end to end on SmolLM2 and real ZsRE records: noop control, FT, resume, shards, schema."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from editprobe.benchmark.editors.base import Editor, NoHparams
from editprobe.benchmark.runner import RunConfig, merge, pre_edit_key, run, select, shard_from_environment
from editprobe.formats import schema_errors
from tests.benchmark_fixtures import build_zsre_set, light_task

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"), pytest.mark.model]


@pytest.fixture(scope="module")
def task_file(data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    dataset = build_zsre_set(data_dir, root / "pset", n=6)
    return light_task(root, dataset)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    # The pre-edit cache is per test module; the converted model copy is shared with the user cache.
    return tmp_path_factory.mktemp("cache")


def _cfg(task_file, cache_dir, out, editor="noop", **kw):
    from editprobe.models import smollm2_local_copy
    from editprobe.paths import default_cache_dir
    smollm2_local_copy(default_cache_dir())
    return RunConfig(task=str(task_file), editor=editor, output_dir=out, cache_dir=cache_dir, **kw)


def _lines(out):
    return [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]


def test_noop_leaves_uncertainty_exactly_unchanged(task_file, cache_dir, tmp_path):
    doc = run(_cfg(task_file, cache_dir, tmp_path / "noop", limit=2), progress=False)
    assert schema_errors(doc, "results") == []
    for line in _lines(tmp_path / "noop"):
        assert line["post"]["U"] == line["pre"]["U"]            # same seeds, same weights
        assert line["post"]["responses"] == line["pre"]["responses"]
        assert line["post"]["locality"] == [1.0] * len(line["post"]["locality"])
    u = doc["uncertainty"]["U"]
    assert u["delta_u"] == {"value": 0.0, "ci_low": 0.0, "ci_high": 0.0}
    assert doc["counts"] == {"records": 2, "ok": 2, "failed": 0}
    assert doc["provenance"]["limit"] == 2 and len(doc["provenance"]["task"]["hash"]) == 64


def test_ft_reuses_the_pre_edit_cache_and_edits(task_file, cache_dir, tmp_path):
    run(_cfg(task_file, cache_dir, tmp_path / "noop", limit=2), progress=False)
    doc = run(_cfg(task_file, cache_dir, tmp_path / "ft", editor="ft", limit=2), progress=False)
    assert doc["timings"]["pre_cache_hits"] == 2 and doc["timings"]["pre_cache_misses"] == 0
    assert doc["provenance"]["editor"]["hparams"]["layers"] == [8]
    assert doc["provenance"]["editor"]["preset"] == "smollm2-135m"           # from tasks/hparams/models.yaml
    assert doc["provenance"]["generation"]["repetition_penalty"] == 1.0
    assert doc["provenance"]["generation"]["sampler"]["top_k"] == 0
    lines = _lines(tmp_path / "ft")
    assert all(x["edit"]["touched"] == ["model.layers.8.mlp.down_proj.weight"] for x in lines)
    # FT-M drives the target's NLL down: teacher-forced reliability after the edit is at least before.
    for x in lines:
        assert x["post"]["reliability"][0] >= x["pre"]["reliability"][0]
    assert schema_errors(doc, "results") == []


def test_an_editor_failure_is_logged_and_the_run_goes_on(task_file, cache_dir, tmp_path, monkeypatch):
    from editprobe.benchmark.editors.noop import NoopEditor

    calls = {"n": 0}

    def flaky(self, model, tokenizer, requests):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return original(self, model, tokenizer, requests)

    original = NoopEditor.apply
    monkeypatch.setattr(NoopEditor, "apply", flaky)
    doc = run(_cfg(task_file, cache_dir, tmp_path / "flaky", limit=2), progress=False)
    assert doc["counts"] == {"records": 2, "ok": 1, "failed": 1}
    first = _lines(tmp_path / "flaky")[0]
    assert first["status"] == "failed" and first["error"] == "RuntimeError: boom" and first["id"].endswith("00000")


def test_resume_after_kill_loses_and_duplicates_nothing(task_file, cache_dir, tmp_path):
    out = tmp_path / "resume"
    cmd = [sys.executable, "-m", "editprobe.cli", "run", "--task", str(task_file), "--editor", "noop",
           "--limit", "3", "--output-dir", str(out), "--cache-dir", str(cache_dir / "resume"), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline:
        samples = out / "samples.jsonl"
        if samples.exists() and samples.read_text().count("\n") >= 1:
            break
        assert proc.poll() is None, f"the run ended before the kill point: {proc.stderr.read()[-2000:]}"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = [json.loads(x)["id"] for x in (out / "samples.jsonl").read_text().splitlines() if x.strip()]
    assert 1 <= len(done_before) < 3 and not (out / "results.json").exists()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ids = [x["id"] for x in _lines(out)]
    assert ids == [f"knowedit_zsre-{i:05d}" for i in range(3)]
    assert json.loads((out / "results.json").read_text())["counts"]["records"] == 3


def test_shards_merge_to_the_unsharded_result(task_file, cache_dir, tmp_path):
    full = run(_cfg(task_file, cache_dir, tmp_path / "full", limit=3), progress=False)
    for i in range(2):
        run(_cfg(task_file, cache_dir, tmp_path / f"s{i}", limit=3, num_shards=2, shard_index=i), progress=False)
    assert [x["id"] for x in _lines(tmp_path / "s0")] == ["knowedit_zsre-00000", "knowedit_zsre-00002"]
    merged = merge([tmp_path / "s1", tmp_path / "s0"], tmp_path / "merged", str(task_file))
    for key in ("metrics", "uncertainty", "adoption", "breakdowns", "counts", "protocols"):
        assert merged[key] == full[key], key
    for key in ("task", "dataset", "model", "editor", "seeds", "limit"):
        assert merged["provenance"][key] == full["provenance"][key]
    strip = lambda lines: [{k: v for k, v in x.items() if k != "seconds"} for x in lines]  # noqa: E731
    assert strip(_lines(tmp_path / "merged")) == strip(_lines(tmp_path / "full"))


def test_shard_selection_and_environment():
    records = [{"id": str(i)} for i in range(7)]
    assert [i for i, _ in select(records, 5, 2, 1)] == [1, 3]
    assert shard_from_environment({"WORLD_SIZE": "4", "RANK": "2"}) == (4, 2)
    assert shard_from_environment({"SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_ID": "5",
                                   "SLURM_ARRAY_TASK_MIN": "4"}) == (3, 1)
    assert shard_from_environment({}) is None


def test_refuses_to_resume_a_different_run_into_the_same_folder(task_file, cache_dir, tmp_path):
    out = tmp_path / "mixed"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"task_hash": "0" * 64}))
    with pytest.raises(ValueError, match="holds a different run .*editor"):
        run(_cfg(task_file, cache_dir, out, limit=1), progress=False)
    assert not (out / "samples.jsonl").exists()


def test_compare_markdown_table_shows_the_adoption_split():
    from editprobe.benchmark.cli import markdown_table

    est = lambda v, lo, hi: {"value": v, "ci_low": lo, "ci_high": hi}  # noqa: E731
    doc = {"metrics": {"reliability": est(0.9, 0.8, 1.0), "generalization": est(0.5, 0.4, 0.6),
                       "locality": est(0.75, 0.7, 0.8)},
           "uncertainty": {"U": {"n": 20, "u_pre": est(0.6, 0.5, 0.7), "u_post": est(0.66, 0.5, 0.8),
                                 "delta_u": est(0.1, -0.02, 0.25), "delta_u_mean": est(0.12, 0.0, 0.3),
                                 "delta_u_median": est(0.05, 0.0, 0.1)}},
           "breakdowns": {"adoption": {"adopted": {"n": 12, "delta_u": est(-0.05, -0.1, 0.0)},
                                       "not_adopted": {"n": 8, "delta_u": est(0.3, 0.1, 0.5)}}},
           "timings": {"mean_edit_seconds": 12.34}}
    header, rule, row = markdown_table([("rome / zsre", doc)]).splitlines()
    assert header.count("|") == rule.count("|") == row.count("|") == 14
    assert row == ("| rome / zsre | 20 | 0.900 | 0.500 | 0.750 | 0.600 | 0.660 | +10.0% [-2.0, +25.0] "
                   "| +12.0% [+0.0, +30.0] | +5.0% | -5.0% [-10.0, +0.0] (12) | +30.0% [+10.0, +50.0] (8) | 12.3 |")
    null = {**doc, "provenance": {"editor": {"name": "null"}}}
    lines = markdown_table([("rome / zsre", doc), ("null / zsre", null)]).splitlines()
    assert lines[-1] == "Sampling-noise floor (null / zsre): ΔU +10.0% [-2.0, +25.0], mean of ratios +12.0% [+0.0, +30.0]."


# --------------------------------------------------------------------------- controls and early errors

def test_the_null_control_resamples_with_fresh_random_numbers(task_file, cache_dir, tmp_path):
    """noop pairs every post-edit sample with its pre-edit twin (ΔU exactly 0); null draws a new seed stream,
    so its responses change while no weight does: its ΔU is the sampling noise."""
    doc = run(_cfg(task_file, cache_dir, tmp_path / "null", editor="null", limit=2), progress=False)
    lines = _lines(tmp_path / "null")
    assert all(x["edit"]["touched"] == [] for x in lines)
    assert any(x["post"]["responses"] != x["pre"]["responses"] for x in lines)
    assert all(x["post"]["locality"] == [1.0] * len(x["post"]["locality"]) for x in lines)  # same weights
    u = doc["uncertainty"]["U"]
    assert u["delta_u"]["value"] != 0.0 and u["n"] == 2 and u["n_floor"] >= 0
    assert doc["provenance"]["editor"] == {"name": "null", "hparams": {"extra": {}}, "preset": None,
                                           "hparams_file": None}


def _no_model(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr("editprobe.models.load_model", refuse)
    monkeypatch.setattr("editprobe.benchmark.runner.load_records", refuse)


def test_bad_input_fails_before_data_or_model_load(task_file, cache_dir, tmp_path, monkeypatch):
    _no_model(monkeypatch)
    bad = tmp_path / "bad.yaml"
    bad.write_text("layers: [1]\nwritten_key: avg\n")
    with pytest.raises(ValueError, match=r"bad.yaml: field 'written_key' must be one of average, prompt"):
        run(RunConfig(task=str(task_file), editor="rome", output_dir=tmp_path / "o", hparams=bad), progress=False)
    bad.write_text("v_num_grad_steps: 0\n")
    with pytest.raises(ValueError, match=r"bad.yaml: field 'v_num_grad_steps' must lie in \[1, inf\]"):
        run(RunConfig(task=str(task_file), editor="memit", output_dir=tmp_path / "o", hparams=bad), progress=False)
    with pytest.raises(ValueError, match="unknown editor 'romee'; known: noop, null"):
        run(RunConfig(task=str(task_file), editor="romee", output_dir=tmp_path / "o"), progress=False)
    sequential = tmp_path / "seq.yaml"
    sequential.write_text(task_file.read_text().replace("edit_mode: single", "edit_mode: sequential"))
    with pytest.raises(ValueError, match=r"seq.yaml: field 'edit_mode': 'sequential' is not run by this version"):
        run(RunConfig(task=str(sequential), editor="rome", output_dir=tmp_path / "o"), progress=False)
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\n  version: [1\n")
    with pytest.raises(ValueError, match=r"broken.yaml: not valid YAML at line 2"):
        run(RunConfig(task=str(broken), editor="noop", output_dir=tmp_path / "o"), progress=False)
    assert not (tmp_path / "o").exists()


class AlwaysFails(Editor):
    """An editor whose every edit raises (the CLI's exit code is under test)."""

    name = "always_fails"
    Hparams = NoHparams

    def apply(self, model, tokenizer, requests):
        raise RuntimeError("this editor never edits")


def test_a_run_that_scored_nothing_exits_non_zero_and_keeps_its_results(task_file, cache_dir, tmp_path):
    from click.testing import CliRunner

    from editprobe.cli import main

    out = tmp_path / "failing"
    result = CliRunner().invoke(main, ["run", "--task", str(task_file), "--editor", f"{__name__}:AlwaysFails",
                                       "--limit", "1", "--out", str(out), "--cache-dir", str(cache_dir), "--quiet"])
    assert result.exit_code == 1, result.output
    assert "1 of 1 records failed (more than 10%)" in result.output
    doc = json.loads((out / "results.json").read_text())                    # nothing computed is lost
    assert doc["counts"] == {"records": 1, "ok": 0, "failed": 1}


def test_the_pre_edit_cache_key_names_everything_the_pass_depends_on(task_file, tmp_path):
    import torch
    import transformers

    from editprobe.benchmark.runner import PreEditCache
    from editprobe.benchmark.sampling import SAMPLER_VERSION
    from editprobe.benchmark.tasks import load_task
    from editprobe.models import ModelInfo

    task = load_task(str(task_file))
    half, full = torch.nn.Linear(2, 2).to(torch.bfloat16), torch.nn.Linear(2, 2)
    key = pre_edit_key(task, "fp", ModelInfo("m", None, "float32", "cpu"), half)
    assert key["dtype_used"] == "bfloat16" and key["device"] == "cpu" and key["sampler_version"] == SAMPLER_VERSION
    assert key["torch"] == torch.__version__ and key["transformers"] == transformers.__version__
    assert key["task_hash"] == task.hash and key["dataset"] == "fp"
    other = pre_edit_key(task, "fp", ModelInfo("m", None, "float32", "cpu"), full)
    assert PreEditCache(tmp_path, key).dir != PreEditCache(tmp_path, other).dir  # a different pass, never reused
