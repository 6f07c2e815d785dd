"""Appendix C.1 uncertainty and ΔU aggregation on small 2-D points; every expected value is derived by hand
in the comments (never copied from the code's output)."""

import dataclasses
import math

import numpy as np
import pytest

from editprobe.benchmark.uncertainty import (
                                             ESTIMATORS,
                                             AleatoricUncertainty,
                                             EpistemicUncertainty,
                                             Estimator,
                                             TotalUncertainty,
                                             aleatoric_uncertainty,
                                             breakdown,
                                             build_estimator,
                                             centroids,
                                             epistemic_uncertainty,
                                             level_uncertainty,
                                             pairwise_distance,
                                             relative_change,
                                             summarize_delta,
                                             total_uncertainty,
                                             )

# M=2 paraphrases, K=2 responses each, d=2.
# paraphrase 1: (0,0),(2,0) -> c1 = (1,0); both responses at distance 1 from c1 -> alea_1 = 1
# paraphrase 2: (0,3),(0,5) -> c2 = (0,4); both responses at distance 1 from c2 -> alea_2 = 1
# U_alea = (1+1)/2 = 1; U_epis = ||(1,0)-(0,4)|| = sqrt(1+16) = sqrt(17); U = (1+sqrt 17)/2
H_2x2 = np.array([[[0, 0], [2, 0]],
                  [[0, 3], [0, 5]]], dtype=float)

# M=3, K=2, all responses identical within a paraphrase, centroids on a 3-4-5 right triangle:
# c1 = (0,0), c2 = (3,0), c3 = (0,4); ||c1-c2|| = 3, ||c1-c3|| = 4, ||c2-c3|| = 5.
H_345 = np.array([[[0, 0], [0, 0]],
                  [[3, 0], [3, 0]],
                  [[0, 4], [0, 4]]], dtype=float)

# Same centroids, but unequal spread (asymmetric):
# paraphrase 1: (-1,0),(1,0) -> c1 = (0,0), alea_1 = 1
# paraphrase 2: (3,0),(3,0)  -> c2 = (3,0), alea_2 = 0
# paraphrase 3: (0,3),(0,5)  -> c3 = (0,4), alea_3 = 1
H_345_SPREAD = np.array([[[-1, 0], [1, 0]],
                         [[3, 0], [3, 0]],
                         [[0, 3], [0, 5]]], dtype=float)


# --- per-record formulas -----------------------------------------------------------------------------

def test_centroids_by_hand():
    np.testing.assert_allclose(centroids(H_2x2), [[1, 0], [0, 4]])
    np.testing.assert_allclose(centroids(H_345_SPREAD), [[0, 0], [3, 0], [0, 4]])


def test_two_by_two_example():
    assert aleatoric_uncertainty(H_2x2) == pytest.approx(1.0)
    assert epistemic_uncertainty(H_2x2) == pytest.approx(math.sqrt(17))
    assert total_uncertainty(H_2x2) == pytest.approx((1 + math.sqrt(17)) / 2)


def test_345_triangle_of_centroids():
    # U_epis = (2/(3*2)) * (3+4+5) = 12/3 = 4; responses identical within each paraphrase -> U_alea = 0; U = 2.
    assert aleatoric_uncertainty(H_345) == 0.0
    assert epistemic_uncertainty(H_345) == pytest.approx(4.0)
    assert total_uncertainty(H_345) == pytest.approx(2.0)


def test_identical_embeddings_give_zero():
    H = np.ones((6, 5, 3))
    for distance in ("euclidean", "cosine"):
        assert aleatoric_uncertainty(H, distance) == pytest.approx(0.0, abs=1e-12)
        assert epistemic_uncertainty(H, distance) == pytest.approx(0.0, abs=1e-12)
        assert total_uncertainty(H, distance) == pytest.approx(0.0, abs=1e-12)
        np.testing.assert_allclose(level_uncertainty(H, distance), np.zeros(6), atol=1e-12)
    assert total_uncertainty(H) == 0.0  # euclidean: exact differences of equal numbers


def test_single_paraphrase_has_no_epistemic_term():
    # M=1: (0,0),(2,0) -> c = (1,0), alea = 1; no pairs -> U_epis = 0; U = 1/2; u_1 = (1 + 0)/2.
    H = H_2x2[:1]
    assert epistemic_uncertainty(H) == 0.0
    assert total_uncertainty(H) == pytest.approx(0.5)
    np.testing.assert_allclose(level_uncertainty(H), [0.5])


def test_level_uncertainty_by_hand_and_mean_equals_total():
    # H_345_SPREAD: alea = (1, 0, 1); mean_{l!=j} ||c_j - c_l||: j=1 (3+4)/2 = 3.5, j=2 (3+5)/2 = 4, j=3 (4+5)/2 = 4.5
    # u = ((1+3.5)/2, (0+4)/2, (1+4.5)/2) = (2.25, 2, 2.75); mean = 7/3
    # U_alea = 2/3, U_epis = 4 -> U = (2/3 + 4)/2 = 7/3
    u = level_uncertainty(H_345_SPREAD)
    np.testing.assert_allclose(u, [2.25, 2.0, 2.75])
    assert total_uncertainty(H_345_SPREAD) == pytest.approx(7 / 3)
    assert u.mean() == pytest.approx(total_uncertainty(H_345_SPREAD))


def test_level_uncertainty_mean_equals_total_on_random_embeddings():
    H = np.random.default_rng(0).normal(size=(6, 5, 8))
    for distance in ("euclidean", "cosine"):
        assert level_uncertainty(H, distance).mean() == pytest.approx(total_uncertainty(H, distance), rel=1e-12)


def test_pairwise_distance_by_hand():
    assert pairwise_distance([0, 0], [3, 4]) == pytest.approx(5.0)
    assert pairwise_distance([1, 0], [0, 1], "cosine") == pytest.approx(1.0)  # orthogonal: cos = 0
    assert pairwise_distance([1, 0], [-2, 0], "cosine") == pytest.approx(2.0)  # opposite: cos = -1
    assert pairwise_distance([1, 0], [3, 0], "cosine") == pytest.approx(0.0)  # same direction, any scale
    assert pairwise_distance([0, 0], [1, 0], "cosine") == pytest.approx(1.0)  # zero vector: orthogonal
    # broadcasting: (2, 1, 2) against (1, 3, 2) -> (2, 3)
    a = np.array([[[0, 0]], [[1, 0]]], dtype=float)
    b = np.array([[[0, 0], [3, 4], [1, 0]]], dtype=float)
    np.testing.assert_allclose(pairwise_distance(a, b), [[0, 5, 1], [1, math.sqrt(4 + 16), 0]])
    with pytest.raises(ValueError, match="euclidean, cosine"):
        pairwise_distance([0, 0], [1, 1], "manhattan")


def test_cosine_uncertainty_by_hand():
    # M=2, K=1: responses (1,0) and (0,1) are their own centroids; alea = 0; U_epis = 1 - cos 90° = 1; U = 1/2.
    H = np.array([[[1, 0]], [[0, 1]]], dtype=float)
    assert aleatoric_uncertainty(H, "cosine") == 0.0
    assert epistemic_uncertainty(H, "cosine") == pytest.approx(1.0)
    assert total_uncertainty(H, "cosine") == pytest.approx(0.5)
    assert epistemic_uncertainty(H) == pytest.approx(math.sqrt(2))  # euclidean for contrast
    # M=1, K=2: responses (1,0),(0,1) -> c = (1/2, 1/2), |c| = 1/sqrt 2; cos((1,0), c) = (1/2)/(1/sqrt 2) = 1/sqrt 2
    # each response at cosine distance 1 - 1/sqrt 2 -> U_alea = 1 - 1/sqrt 2
    H = np.array([[[1, 0], [0, 1]]], dtype=float)
    assert aleatoric_uncertainty(H, "cosine") == pytest.approx(1 - 1 / math.sqrt(2))


def test_bad_shape_raises():
    with pytest.raises(ValueError, match=r"\(M, K, d\)"):
        total_uncertainty(np.zeros((5, 3)))
    with pytest.raises(ValueError, match=r"\(M, K, d\)"):
        total_uncertainty(np.zeros((0, 5, 3)))


def test_relative_change_by_hand():
    assert relative_change(2.0, 3.0) == pytest.approx(0.5)  # (3-2)/2
    assert relative_change(2.0, 1.0) == pytest.approx(-0.5)  # (1-2)/2
    assert relative_change(0.0, 0.01, floor=1e-3) == pytest.approx(10.0)  # 0.01 / 1e-3
    assert relative_change(0.0, 0.01) == pytest.approx(10.0)  # default floor is 1e-3
    assert relative_change(5e-4, 1e-3, floor=1e-3) == pytest.approx(0.5)  # (1e-3 - 5e-4) / 1e-3
    assert relative_change(0.0, 0.0) == 0.0
    np.testing.assert_allclose(relative_change(np.array([1.0, 2.0]), np.array([2.0, 1.0])), [1.0, -0.5])
    with pytest.raises(ValueError, match="floor"):
        relative_change(1.0, 2.0, floor=0.0)


# --- estimators --------------------------------------------------------------------------------------

def test_estimator_names_and_protocol():
    assert AleatoricUncertainty().name == "U_alea[euclidean]"
    assert EpistemicUncertainty("cosine").name == "U_epis[cosine]"
    assert TotalUncertainty().name == "U[euclidean]"
    assert ESTIMATORS.names()[:3] == ["U_alea", "U_epis", "U"]
    for symbol, cls in ESTIMATORS.items():
        est = cls()
        assert isinstance(est, Estimator)
        if symbol in ("U_alea", "U_epis", "U"):
            assert est.needs == ("embeddings",)
        assert build_estimator(est.name) == est
    with pytest.raises(dataclasses.FrozenInstanceError):
        TotalUncertainty().distance = "cosine"


def test_estimators_compute_the_hand_values():
    stats = {"embeddings": H_2x2}
    assert AleatoricUncertainty()(stats) == pytest.approx(1.0)
    assert EpistemicUncertainty()(stats) == pytest.approx(math.sqrt(17))
    assert TotalUncertainty()(stats) == pytest.approx((1 + math.sqrt(17)) / 2)
    # orthogonal unit responses, cosine: U_epis = 1 (see test_cosine_uncertainty_by_hand)
    assert build_estimator("U_epis[cosine]")({"embeddings": np.array([[[1.0, 0]], [[0, 1.0]]])}) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="embeddings"):
        TotalUncertainty()({})


def test_build_estimator_parsing():
    assert build_estimator("U_alea") == AleatoricUncertainty("euclidean")
    assert build_estimator("U_alea[cosine]") == AleatoricUncertainty("cosine")
    assert build_estimator("U_epis[euclidean]") == EpistemicUncertainty("euclidean")
    assert build_estimator("U") == TotalUncertainty("euclidean")
    assert build_estimator("U[cosine]") == TotalUncertainty("cosine")


def test_build_estimator_unknown_names():
    with pytest.raises(ValueError, match="U_alea, U_epis, U") as err:
        build_estimator("U_total")
    assert "U_total" in str(err.value)
    with pytest.raises(ValueError, match="U_alea, U_epis, U"):
        build_estimator("U_alea[cosine")
    with pytest.raises(ValueError, match="euclidean, cosine"):
        build_estimator("U[manhattan]")
    with pytest.raises(ValueError, match="euclidean, cosine"):
        AleatoricUncertainty("manhattan")


# --- aggregation -------------------------------------------------------------------------------------

STAT_KEYS = ("delta_u", "delta_u_mean", "delta_u_median", "abs_diff", "u_pre", "u_post")


def test_summarize_delta_by_hand():
    # u_pre = [1,2,3], u_post = [2,2,3]
    # delta_u = mean(post)/mean(pre) - 1 = (7/3)/2 - 1 = 7/6 - 1 = 1/6
    # per-record relative changes = (1/1, 0/2, 0/3) = (1,0,0) -> delta_u_mean = 1/3
    # differences = (1,0,0) -> abs_diff = 1/3; u_pre mean 2, u_post mean 7/3; median of (1,0,0) = 0
    s = summarize_delta([1, 2, 3], [2, 2, 3])
    assert s["n"] == 3 and s["n_floor"] == 0
    expected = {"delta_u": 7 / 6 - 1, "delta_u_mean": 1 / 3, "delta_u_median": 0.0, "abs_diff": 1 / 3,
                "u_pre": 2.0, "u_post": 7 / 3}
    for key, value in expected.items():
        assert s[key]["value"] == pytest.approx(value)
        assert s[key]["ci_low"] <= s[key]["value"] <= s[key]["ci_high"]
    # any resample of three values from {1,0,0} has mean in [0,1]; the per-record changes and the differences
    # are the same vector (1,0,0), so with shared indices their bootstrap CIs coincide.
    assert 0.0 <= s["abs_diff"]["ci_low"] and s["abs_diff"]["ci_high"] <= 1.0
    assert s["abs_diff"]["ci_low"] == pytest.approx(s["delta_u_mean"]["ci_low"])
    assert s["abs_diff"]["ci_high"] == pytest.approx(s["delta_u_mean"]["ci_high"])
    # u_pre resamples are means of three draws from {1,2,3}: within [1,3]
    assert 1.0 <= s["u_pre"]["ci_low"] and s["u_pre"]["ci_high"] <= 3.0


def test_summarize_delta_identical_pre_post_is_exactly_zero():
    u = [0.0, 0.3, 0.7, 1.1, 0.05]
    s = summarize_delta(u, u)
    for key in ("delta_u", "delta_u_mean", "abs_diff"):
        assert s[key] == {"value": 0.0, "ci_low": 0.0, "ci_high": 0.0}


def test_summarize_delta_is_paired():
    # post = pre + 0.5 record by record (all values exact in binary): every paired resample of the
    # differences is a mean of 0.5s, so the CI is exactly [0.5, 0.5]; an unpaired bootstrap would not be.
    pre = np.array([1.0, 2.0, 3.5, 0.25, 4.0])
    s = summarize_delta(pre, pre + 0.5)
    assert s["abs_diff"] == {"value": 0.5, "ci_low": 0.5, "ci_high": 0.5}
    assert s["u_pre"]["ci_high"] - s["u_pre"]["ci_low"] > 0  # the levels themselves do vary


def test_summarize_delta_is_deterministic_per_seed():
    rng = np.random.default_rng(1)
    pre = rng.uniform(0.1, 1.0, size=40)
    post = pre * rng.uniform(0.8, 1.5, size=40)
    assert summarize_delta(pre, post, seed=7) == summarize_delta(pre, post, seed=7)
    a, b = summarize_delta(pre, post, seed=7), summarize_delta(pre, post, seed=8)
    assert a["delta_u"]["value"] == b["delta_u"]["value"]  # the point estimate does not depend on the seed
    assert any(a[k]["ci_low"] != b[k]["ci_low"] or a[k]["ci_high"] != b[k]["ci_high"] for k in STAT_KEYS)
    assert a["params"] == {"floor": 1e-3, "n_boot": 2000, "seed": 7, "alpha": 0.05}


def test_summarize_delta_floor():
    # pre = [0,0], post = [0.01, 0.03], floor 1e-3:
    # per record 0.01/1e-3 = 10 and 0.03/1e-3 = 30 -> delta_u_mean = 20; delta_u = (0.02 - 0)/1e-3 = 20;
    # both records sit below the floor
    s = summarize_delta([0.0, 0.0], [0.01, 0.03], floor=1e-3)
    assert s["n_floor"] == 2 and s["delta_u_median"]["value"] == pytest.approx(20.0)
    assert s["delta_u_mean"]["value"] == pytest.approx(20.0)
    assert s["delta_u"]["value"] == pytest.approx(20.0)


def test_summarize_delta_empty_and_single():
    s = summarize_delta([], [])
    assert s["n"] == 0
    for key in STAT_KEYS:
        assert s[key] == {"value": None, "ci_low": None, "ci_high": None}
    # n=1: pre 2, post 3 -> delta_u = delta_u_mean = 1/2, abs_diff = 1; every resample is the one record.
    s = summarize_delta([2.0], [3.0])
    assert s["n"] == 1
    for key, value in {"delta_u": 0.5, "delta_u_mean": 0.5, "abs_diff": 1.0, "u_pre": 2.0, "u_post": 3.0}.items():
        assert s[key]["value"] == pytest.approx(value)
        assert s[key]["ci_low"] == s[key]["value"] == s[key]["ci_high"]


def test_summarize_delta_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="equal length"):
        summarize_delta([1.0, 2.0], [1.0])


def test_breakdown_by_group():
    # groups b,a,b: b -> pre [1,3], post [2,3]: delta_u = 2.5/2 - 1 = 1/4, delta_u_mean = (1 + 0)/2, abs_diff = 1/2
    #               a -> pre [2], post [2]: every statistic 0
    out = breakdown([1, 2, 3], [2, 2, 3], ["b", "a", "b"], n_boot=500, seed=3)
    assert list(out) == ["b", "a"]  # first-appearance order
    assert out["b"]["n"] == 2 and out["a"]["n"] == 1
    assert out["b"]["delta_u"]["value"] == pytest.approx(0.25)
    assert out["b"]["delta_u_mean"]["value"] == pytest.approx(0.5)
    assert out["b"]["abs_diff"]["value"] == pytest.approx(0.5)
    assert out["a"]["abs_diff"] == {"value": 0.0, "ci_low": 0.0, "ci_high": 0.0}
    assert out["b"]["params"]["n_boot"] == 500 and out["b"]["params"]["seed"] == 3
    with pytest.raises(ValueError, match="one label per record"):
        breakdown([1, 2], [1, 2], ["a"])
