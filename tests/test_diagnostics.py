"""`editprobe diagnose`: every diagnostic under tasks/diagnostics/ runs on SmolLM2 in its CI-sized settings and
writes its table and plot; the pieces with a closed form are checked against hand derivations."""

import json

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from editprobe.benchmark import diagnostics as D
from editprobe.benchmark.editors.base import state_digest


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One cache for the module: context templates and covariance statistics are computed once."""
    return tmp_path_factory.mktemp("diag-cache")


def test_the_documented_diagnostics_exist():
    assert set(D.available()) >= {"right_vector_norms", "norm_trajectory", "kl_ablation", "layer_sweep",
                                  "nullspace_rank", "preservation_sweep", "causal_trace"}


@pytest.mark.parametrize("name", ["nullspace_rank", "right_vector_norms", "norm_trajectory", "kl_ablation",
                                  "layer_sweep", "preservation_sweep", "causal_trace"])
def test_each_diagnostic_runs_ci_sized_and_writes_table_and_plot(name, smollm2, shared_cache, data_dir, tmp_path):
    model = smollm2[0]
    before = state_digest(model)
    doc = D.run_diagnostic(name, tmp_path, model_id="smollm2-135m-instruct", data_dir=data_dir,
                           cache_dir=shared_cache, ci=True, model_bundle=(*smollm2, None))
    assert state_digest(model) == before                               # every edit a diagnostic made was undone
    written = json.loads((tmp_path / f"{name}.json").read_text())
    assert written["diagnostic"] == name and written["ci"] is True and written["rows"]
    png = (tmp_path / f"{name}.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    _, spec = D.load_spec(name, ci=True)
    rows = doc["rows"]
    if name == "right_vector_norms":
        assert {(r["editor"], r["clamp_norm_factor"]) for r in rows} == \
            {(e, c) for e in spec["editors"] for c in spec["clamp_norm_factors"]}
        for r in rows:
            assert 0 < r["min"] <= r["mean"] <= r["max"] and r["n"] == spec["records"]["limit"]
            # the headline is ||delta||: inside the clamp ball ||delta|| <= clamp * ||init|| by construction
            assert r["delta_over_init_max"] <= r["clamp_norm_factor"] * (1 + 1e-5)
            assert r["update_right_vector_mean"] > 0
        rome = {r["clamp_norm_factor"]: r["mean"] for r in rows if r["editor"] == "rome"}
        assert rome[0.75] <= rome[4.0]                            # a tighter ball cannot give a longer delta
    elif name == "norm_trajectory":
        n = spec["records"]["limit"]
        runs = [(e, c) for e in spec["editors"] for c in spec["clamp_norm_factors"]]
        for editor, clamp in runs:
            assert [r["step"] for r in rows if (r["editor"], r["clamp_norm_factor"]) == (editor, clamp)] == \
                list(range(1, n + 1))
        assert all(r["weight_drift"] > 0 and r["delta_norm"] > 0 for r in rows) and len(doc["final"]) == len(runs)
    elif name in ("kl_ablation", "layer_sweep"):
        assert len(rows) == len(spec["editors"]) * len(spec["grid"])
        assert all(0 <= r[k] <= 1 for r in rows for k in ("reliability", "generalization", "locality"))
    elif name == "nullspace_rank":
        _check_null_dims_against_the_stats_files(doc, shared_cache)
    elif name == "preservation_sweep":
        assert [s["beta"] for s in doc["summary"]] == spec["betas"]
        assert not set(doc["protected"]) & set(doc["records"]) and len(doc["protected"]) == 5
        for r in rows:
            assert (r["steps_to_converge"] is None) == (r["loss_last"] >= doc["early_stop_loss"])
            assert r["steps"] <= spec["max_steps"] and r["L_kp"] >= 0
    elif name == "causal_trace":
        assert [r["layer"] for r in rows] == list(range(model.config.num_hidden_layers))
        assert doc["traced"] + sum(doc["skipped"].values()) == spec["records"]["limit"]
        assert all(r["p_clean"] >= spec["min_p_clean"] for r in doc["per_record"])


def _check_null_dims_against_the_stats_files(doc, cache):
    """The null-space dimension is the number of eigenvalues of C = mom2 / count below the threshold (numpy)."""
    for row in doc["rows"]:
        (path,) = (cache / "stats").rglob(f"{row['module']}_float32_mom2_*.npz")
        with np.load(path) as data:
            eig = np.linalg.eigvalsh(data["mom2.mom2"].astype(np.float64) / int(data["mom2.count"]))
        for t in doc["thresholds"]:
            assert row[f"null_dim@{t:g}"] == int((eig < t).sum())
        assert row["null_dim@0.01"] <= row["null_dim@0.02"] <= row["d_in"]


def test_causal_trace_without_noise_has_no_effect_anywhere(smollm2, data_dir, tmp_path):
    """With zero noise the corrupted run is the clean run: p_corrupt = p_clean and every indirect effect is 0."""
    model, tokenizer = smollm2
    records = D.load_records(data_dir, {"limit": 4})
    ctx = D.Context(model, tokenizer, "smollm2-135m", records, tmp_path, {})
    out = D.run_causal_trace(ctx, {"noise_scale": 0.0, "samples": 2, "window": 3, "min_p_clean": 0.0})
    assert out["traced"] == 4
    for r in out["per_record"]:
        assert r["p_corrupt"] == pytest.approx(r["p_clean"], rel=1e-4)
        assert np.allclose(r["p_restored"], r["p_clean"], rtol=1e-4)


def test_protected_key_loss_is_the_rank_one_updates_effect_on_protected_outputs():
    """L_kp(v*) against the update itself: build ROME's Delta for v* with rank_one_update, apply it to each
    protected key, and take mean ||Delta k_p||^2 / mean ||W k_p||^2 directly."""
    from editprobe.benchmark.editors.rome import rank_one_update

    g = torch.Generator().manual_seed(0)
    d_out, d_in = 4, 6
    W = torch.randn(d_out, d_in, generator=g, dtype=torch.float64)
    A = torch.randn(d_in, d_in, generator=g, dtype=torch.float64)
    C = A @ A.T + torch.eye(d_in, dtype=torch.float64)
    k_star, keys_p = torch.randn(d_in, generator=g, dtype=torch.float64), torch.randn(5, d_in, generator=g,
                                                                                     dtype=torch.float64)
    v_star = torch.randn(d_out, generator=g, dtype=torch.float64)
    delta, _, left = rank_one_update(k_star, v_star, W @ k_star, C)
    expected = (keys_p @ delta.T).pow(2).sum(1).mean() / (keys_p @ W.T).pow(2).sum(1).mean()
    loss = D.protected_key_loss(W @ k_star, left, k_star, keys_p, keys_p @ W.T)
    assert float(loss(v_star)) == pytest.approx(float(expected), rel=1e-10)
    assert float(loss(W @ k_star)) == 0.0                    # writing what is already there moves nothing


def test_bad_diagnostic_files_fail_with_one_line_naming_file_and_key(tmp_path):
    with pytest.raises(ValueError, match="unknown diagnostic 'no_such'; known: .*causal_trace"):
        D.load_spec("no_such")
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"diagnostic": "sweep", "editors": ["rome"], "grd": []}))
    with pytest.raises(ValueError, match=r"mine.yaml: unknown key\(s\) grd for a sweep diagnostic"):
        D.load_spec(path)
    path.write_text(yaml.safe_dump({"diagnostic": "sweep", "ci": {"betas": [1]}}))
    with pytest.raises(ValueError, match=r"mine.yaml: unknown key\(s\) ci.betas"):
        D.load_spec(path)
    path.write_text(yaml.safe_dump({"diagnostic": "histogram"}))
    with pytest.raises(ValueError, match="mine.yaml: field 'diagnostic' must be one of .*sweep"):
        D.load_spec(path)


def test_cli_lists_the_diagnostics():
    from editprobe.cli import main

    result = CliRunner().invoke(main, ["diagnose", "--list"])
    assert result.exit_code == 0
    assert "preservation_sweep" in result.output and "null-space" in result.output.lower()
