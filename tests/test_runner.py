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
    assert doc["provenance"]["generation"]["prompt_format"] == "chat template with the task's system message"
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


def _kill_after_first_line(cmd, out):
    """Start the CLI run ``cmd``, kill -9 it once its samples.jsonl holds a line; the environment to rerun it with."""
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
    return env


def test_resume_after_kill_loses_and_duplicates_nothing(task_file, cache_dir, tmp_path):
    out = tmp_path / "resume"
    cmd = [sys.executable, "-m", "editprobe.cli", "run", "--task", str(task_file), "--editor", "noop",
           "--limit", "3", "--output-dir", str(out), "--cache-dir", str(cache_dir / "resume"), "--quiet"]
    env = _kill_after_first_line(cmd, out)
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
    batch = tmp_path / "batch.yaml"
    batch.write_text(task_file.read_text().replace("edit_mode: single", "edit_mode: batch"))
    with pytest.raises(ValueError, match=r"batch.yaml: field 'batch': edit_mode batch needs batch.size"):
        run(RunConfig(task=str(batch), editor="memit", output_dir=tmp_path / "o"), progress=False)
    with pytest.raises(ValueError, match=r"batch.yaml: field 'edit_mode': editor 'rome' does not support 'batch'"):
        run(RunConfig(task=str(batch), editor="rome", output_dir=tmp_path / "o"), progress=False)
    sequential = tmp_path / "seq.yaml"
    sequential.write_text(task_file.read_text().replace("edit_mode: single", "edit_mode: sequential"))
    with pytest.raises(ValueError, match=r"seq.yaml: field 'sequential': edit_mode sequential needs measure_every"):
        run(RunConfig(task=str(sequential), editor="rome", output_dir=tmp_path / "o"), progress=False)
    with pytest.raises(ValueError, match=r"seq.yaml: field 'edit_mode': editor 'ike' does not support 'sequential'"):
        run(RunConfig(task=str(sequential), editor="ike", output_dir=tmp_path / "o"), progress=False)
    estimators = tmp_path / "est.yaml"
    estimators.write_text(task_file.read_text() + "estimators: [U, U_alea, U_epis, 'EigV[cosine]']\n")
    with pytest.raises(ValueError, match=r"est.yaml: field 'estimators': EigV takes no \[distance\]"):
        run(RunConfig(task=str(estimators), editor="noop", output_dir=tmp_path / "o"), progress=False)
    estimators.write_text(task_file.read_text() + "estimators: [U, LexSim]\n")
    with pytest.raises(ValueError, match=r"est.yaml: field 'estimators': must include U, U_alea, U_epis"):
        run(RunConfig(task=str(estimators), editor="noop", output_dir=tmp_path / "o"), progress=False)
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


# --------------------------------------------------------------------------- estimators, sequential mode, layout

def _variant(task_file, tmp_path, name, **changes):
    import yaml

    spec = yaml.safe_load(task_file.read_text())
    spec.update(name=name, **changes)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_the_runner_scores_what_the_task_lists(task_file, cache_dir, tmp_path):
    """Each listed estimator is scored before and after the edit and aggregated under its own name; the values are
    those the estimator gives on the statistics written to samples.jsonl (LexSim needs only the responses)."""
    from editprobe.benchmark.uncertainty import lexical_similarity_uncertainty

    listed = ["U", "U_alea", "U_epis", "U_epis[cosine]", "LexSim", "EigV", "SPUQ"]
    task = _variant(task_file, tmp_path, "zsre_estimators", estimators=listed)
    doc = run(_cfg(task, cache_dir, tmp_path / "est", editor="null", limit=2), progress=False)
    assert list(doc["uncertainty"]) == listed
    for line in _lines(tmp_path / "est"):
        for state in ("pre", "post"):
            assert line[state]["LexSim"] == pytest.approx(lexical_similarity_uncertainty(line[state]["responses"]))
            assert 1.0 <= line[state]["EigV"] <= 2 * 6 and 0.0 <= line[state]["SPUQ"] <= 1.0
            assert line[state]["U_epis[cosine]"] != line[state]["U_epis"]      # another distance, another number
    lex = doc["uncertainty"]["LexSim"]
    pre = [x["pre"]["LexSim"] for x in _lines(tmp_path / "est")]
    assert lex["u_pre"]["value"] == pytest.approx(sum(pre) / 2) and lex["n"] == 2


def _sequential_task(task_file, tmp_path):
    return _variant(task_file, tmp_path, "zsre_sequential_light", edit_mode="sequential",
                    sequential={"measure_every": 2, "panel_edited": 1, "panel_untouched": 1})


def test_a_sequential_run_reports_its_trajectory(task_file, cache_dir, tmp_path):
    """Three FT edits without restore: one line per edit, a panel after edits 2 and 3, the weight change growing
    from the first edit's own size; the chain is restored bit-exactly at the end (else RestoreError)."""
    task = _sequential_task(task_file, tmp_path)
    doc = run(_cfg(task, cache_dir, tmp_path / "seq", editor="ft", limit=3), progress=False)
    lines = _lines(tmp_path / "seq")
    assert [(x.get("kind"), x["step"]) for x in lines] == [("edit", 1), ("edit", 2), ("panel", 2), ("edit", 3),
                                                           ("panel", 3)]
    edits = [x for x in lines if x["kind"] == "edit"]
    assert [x["id"] for x in edits] == [f"knowedit_zsre-{i:05d}" for i in range(3)]
    first = edits[0]["edit"]
    assert first["weight_change"] == pytest.approx(first["edit_norm"]["delta_w"]) and first["weight_change"] > 0
    panel = [x for x in lines if x["kind"] == "panel"]
    assert [m["id"] for m in panel[0]["edited"]] == ["knowedit_zsre-00000"]
    assert [m["id"] for m in panel[0]["untouched"]] == ["knowedit_zsre-00003"]   # the record after the chain
    assert panel[0]["untouched"][0]["pre"]["U"] == panel[1]["untouched"][0]["pre"]["U"]
    seq = doc["sequential"]
    assert [s["step"] for s in seq["steps"]] == [1, 2, 3] and [p["step"] for p in seq["panels"]] == [2, 3]
    assert seq["panels"][1]["weight_change"] == pytest.approx(edits[2]["edit"]["weight_change"])
    assert seq["panels"][0]["edited"]["n"] == 1 and seq["panels"][0]["untouched"]["n"] == 1
    assert doc["counts"] == {"records": 3, "ok": 3, "failed": 0}
    assert schema_errors(doc, "results") == []
    from click.testing import CliRunner

    from editprobe.cli import main

    svg = tmp_path / "curves.svg"
    result = CliRunner().invoke(main, ["compare", "--sequential", str(svg), str(tmp_path / "seq")])
    assert result.exit_code == 0, result.output
    rows = [x for x in result.output.splitlines() if x.startswith("| 2 ") or x.startswith("| 3 ")]
    assert len(rows) == 2 and f"| {seq['panels'][0]['weight_change']:.3f} |" in rows[0]
    assert svg.read_text().startswith("<?xml") and "edits applied" in svg.read_text()


def test_a_killed_sequential_run_resumes_by_replaying_its_edits(task_file, cache_dir, tmp_path):
    """kill -9 after the first edit; the rerun replays it (weight digest checked) and ends with the lines and
    numbers of an uninterrupted run."""
    task = _sequential_task(task_file, tmp_path)
    clean = run(_cfg(task, cache_dir, tmp_path / "clean", editor="ft", limit=3), progress=False)
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "editprobe.cli", "run", "--task", str(task), "--editor", "ft", "--limit", "3",
           "--out", str(out), "--cache-dir", str(cache_dir), "--quiet"]
    env = _kill_after_first_line(cmd, out)
    assert not (out / "results.json").exists()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    resumed = json.loads((out / "results.json").read_text())
    strip = lambda lines: [{k: v for k, v in x.items() if k != "seconds"} for x in lines]  # noqa: E731
    assert strip(_lines(out)) == strip(_lines(tmp_path / "clean"))
    for key in ("metrics", "uncertainty", "sequential", "counts"):
        assert resumed[key] == clean[key], key


def test_a_tampered_chain_cannot_be_resumed(task_file, cache_dir, tmp_path):
    task = _sequential_task(task_file, tmp_path)
    out = tmp_path / "tampered"
    run(_cfg(task, cache_dir, out, editor="ft", limit=2), progress=False)
    lines = _lines(out)
    lines[0]["edit"]["digest"] = "0" * 64
    (out / "samples.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines[:1]))
    with pytest.raises(RuntimeError, match="replaying edit 1 .* gave other weights"):
        run(_cfg(task, cache_dir, out, editor="ft", limit=2), progress=False)


def test_merge_and_aggregation_need_no_torch(tmp_path):
    """The storage and aggregation phases (used by merge and the leaderboard) import neither torch nor
    transformers."""
    code = ("import sys\n"
            "import editprobe.benchmark.runner, editprobe.benchmark.aggregate, editprobe.benchmark.storage\n"
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_batch_run_edits_whole_batches_and_shards_by_batch(task_file, cache_dir, tmp_path):
    """Two FT batches of two edits; each record is measured with its whole batch written (so a record's post-edit
    state differs from its single-edit one), and shards split whole batches."""
    task = _variant(task_file, tmp_path, "zsre_batch_light", edit_mode="batch", batch={"size": 2})
    doc = run(_cfg(task, cache_dir, tmp_path / "batch", editor="ft", limit=4), progress=False)
    lines = _lines(tmp_path / "batch")
    assert [(x["id"][-1], x["batch"], x["batch_size"]) for x in lines] == [("0", 0, 2), ("1", 0, 2), ("2", 1, 2),
                                                                          ("3", 1, 2)]
    assert doc["counts"] == {"records": 4, "ok": 4, "failed": 0} and schema_errors(doc, "results") == []
    single = run(_cfg(task_file, cache_dir, tmp_path / "single", editor="ft", limit=1), progress=False)
    assert single["counts"]["ok"] == 1
    alone = _lines(tmp_path / "single")[0]["post"]
    assert alone["locality"] != lines[0]["post"]["locality"] or alone["responses"] != lines[0]["post"]["responses"]
    run(_cfg(task, cache_dir, tmp_path / "b1", editor="ft", limit=4, num_shards=2, shard_index=1), progress=False)
    assert [x["id"][-1] for x in _lines(tmp_path / "b1")] == ["2", "3"]
    strip = lambda x: {k: v for k, v in x.items() if k != "seconds"}  # noqa: E731
    assert [strip(x) for x in _lines(tmp_path / "b1")] == [strip(x) for x in lines[2:]]
