"""LexSim, EigV and SPUQ on tiny hand-made records; every expected value is derived by hand in the comments
(never copied from the code's output)."""

import dataclasses
import math
import random

import numpy as np
import pytest

from editprobe.benchmark.uncertainty import (
                                             ESTIMATORS,
                                             AleatoricUncertainty,
                                             EigenvalueUncertainty,
                                             Estimator,
                                             LexicalSimilarity,
                                             SPUQUncertainty,
                                             _lcs_length,
                                             build_estimator,
                                             rouge_l,
                                             )

E1, E2, E3 = np.eye(3)


def lexsim(responses):
    return LexicalSimilarity()({"responses": responses})


def eigv(H):
    return EigenvalueUncertainty()({"embeddings": np.asarray(H, dtype=float)})


def spuq(H, Q):
    return SPUQUncertainty()({"embeddings": np.asarray(H, dtype=float),
                              "question_embeddings": np.asarray(Q, dtype=float)})


# --- registry and construction -----------------------------------------------------------------------

def test_registry_lists_all_six_symbols_and_each_builds():
    assert ESTIMATORS.names() == ["U_alea", "U_epis", "U", "LexSim", "EigV", "SPUQ"]
    expected = {"LexSim": (LexicalSimilarity, ("responses",)),
                "EigV": (EigenvalueUncertainty, ("embeddings",)),
                "SPUQ": (SPUQUncertainty, ("embeddings", "question_embeddings"))}
    for symbol, (cls, needs) in expected.items():
        est = build_estimator(symbol)
        assert est == cls() and isinstance(est, Estimator)
        assert est.name == symbol and est.needs == needs
        assert build_estimator(est.name) == est  # the name round-trips
        with pytest.raises(dataclasses.FrozenInstanceError):
            est.symbol = "x"


def test_a_bracket_is_rejected_where_there_is_no_distance():
    for symbol in ("LexSim", "EigV", "SPUQ"):
        with pytest.raises(ValueError, match=rf"^{symbol} takes no \[distance\]"):
            build_estimator(f"{symbol}[cosine]")
    assert build_estimator("U_alea[cosine]") == AleatoricUncertainty("cosine")  # unchanged where it applies


def test_missing_statistics_are_named():
    H = np.zeros((2, 1, 2))
    with pytest.raises(ValueError, match=r"LexSim needs statistics \['responses'\]"):
        LexicalSimilarity()({"embeddings": H})
    with pytest.raises(ValueError, match=r"EigV needs statistics \['embeddings'\]"):
        EigenvalueUncertainty()({"responses": [["a"]]})
    with pytest.raises(ValueError, match=r"SPUQ needs statistics \['question_embeddings'\]"):
        SPUQUncertainty()({"embeddings": H})
    with pytest.raises(ValueError, match=r"SPUQ needs statistics \['embeddings', 'question_embeddings'\]"):
        SPUQUncertainty()({})


# --- ROUGE-L and LexSim ------------------------------------------------------------------------------

def test_rouge_l_by_hand():
    # F1 = 2 LCS / (|a| + |b|).
    # "the cat sat" / "the cat": LCS = 2 ("the cat"), P = 2/2, R = 2/3 -> F = 2*1*(2/3) / (5/3) = 0.8 = 4/5
    assert rouge_l("the cat sat", "the cat") == pytest.approx(0.8)
    assert rouge_l("the cat", "the cat sat") == pytest.approx(0.8)  # symmetric
    # "a b c d" / "a c b d": LCS = 3 ("a b d" or "a c d"; not 4, b and c swap) -> 2*3/8 = 0.75
    assert rouge_l("a b c d", "a c b d") == pytest.approx(0.75)
    # Lin 2004's example: "police killed the gunman" / "the gunman killed police". Of the word pairs in order
    # in the first (P<K<T<G), only (the, gunman) is also in order in the second (T<G<K<P) -> LCS = 2 -> 4/8
    assert rouge_l("police killed the gunman", "the gunman killed police") == pytest.approx(0.5)
    # a subsequence, not a substring: "a b c" / "x a y c z" -> LCS "a c" = 2 -> 2*2/(3+5) = 0.5
    assert rouge_l("a b c", "x a y c z") == pytest.approx(0.5)
    # disjoint words -> LCS 0
    assert rouge_l("red apple", "blue sky") == 0.0


def test_rouge_l_tokenisation_and_empty_responses():
    # lowercased; punctuation and whitespace only separate words -> identical token lists -> 1.0
    assert rouge_l("The Cat,  sat!", "the cat sat") == pytest.approx(1.0)
    assert rouge_l("don't", "DON T") == pytest.approx(1.0)  # "don't" -> ["don", "t"]
    # "Paris." / "paris is nice": tokens [paris] vs [paris, is, nice] -> LCS 1 -> 2*1/4 = 0.5
    assert rouge_l("Paris.", "paris is nice") == pytest.approx(0.5)
    assert rouge_l("", "") == 1.0
    assert rouge_l("?!", "") == 1.0  # punctuation only: no tokens, like the empty string
    assert rouge_l("", "Paris") == 0.0
    assert rouge_l("...", "Paris") == 0.0


def test_lcs_matches_the_textbook_recurrence():
    # independent reference: the (|a|+1) x (|b|+1) table of the textbook LCS recurrence, in plain Python
    def reference(a, b):
        L = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
        for i, x in enumerate(a, 1):
            for j, y in enumerate(b, 1):
                L[i][j] = L[i - 1][j - 1] + 1 if x == y else max(L[i - 1][j], L[i][j - 1])
        return L[-1][-1]

    rng = random.Random(0)
    for _ in range(200):
        a = [rng.randrange(4) for _ in range(rng.randrange(0, 9))]
        b = [rng.randrange(4) for _ in range(rng.randrange(0, 9))]
        assert _lcs_length(np.array(a, dtype=np.int64), np.array(b, dtype=np.int64)) == reference(a, b)


def test_lexsim_by_hand():
    # one pair (M=2, K=1): -ROUGE-L("the cat sat", "the cat") = -0.8
    assert lexsim([["the cat sat"], ["the cat"]]) == pytest.approx(-0.8)
    # M=1, K=3: pairs (1,2) = 1, (1,3) = 0, (2,3) = 0 -> mean 1/3
    assert lexsim([["a b c", "a b c", "x y"]]) == pytest.approx(-1 / 3)
    # M=2, K=2, pooled over paraphrases: y = "a b", "a b", "a", "c"; the 6 pairs:
    # (1,2) = 1; (1,3) = (2,3) = 2*1/(2+1) = 2/3; (1,4) = (2,4) = (3,4) = 0 -> sum 7/3, mean 7/18
    assert lexsim([["a b", "a b"], ["a", "c"]]) == pytest.approx(-7 / 18)


def test_lexsim_extremes():
    assert lexsim([["Paris", "paris"], ["Paris.", "PARIS"]]) == pytest.approx(-1.0)  # identical: every pair 1
    assert lexsim([["a"], ["b"], ["c"]]) == 0.0  # no shared word: every pair 0
    assert lexsim([["", ""]]) == pytest.approx(-1.0)  # two empty answers agree
    assert lexsim([["only one"]]) == -1.0  # no pair to disagree
    with pytest.raises(ValueError, match="M lists of K strings"):
        lexsim(["a", "b"])


# --- EigV ---------------------------------------------------------------------------------------------

def test_eigv_two_responses_at_cosine_c():
    # W = [[1, c], [c, 1]], both degrees 1 + c, so D^-1/2 W D^-1/2 = W / (1 + c), with eigenvalues
    # (1 + c)/(1 + c) = 1 (vector [1, 1]) and (1 - c)/(1 + c) (vector [1, -1]). L's eigenvalues: 0 and
    # 2c/(1 + c) <= 1 -> EigV = 1 + (1 - 2c/(1 + c)) = 2/(1 + c).
    # c = 1/2 with vectors that are not unit-norm: (2, 0) and (1, sqrt 3) (norm 2), cos = 2/(2*2) -> 4/3
    assert eigv([[[2.0, 0.0]], [[1.0, math.sqrt(3)]]]) == pytest.approx(4 / 3)
    # c = 0.8: (1, 0) and (0.8, 0.6) -> 2/1.8 = 10/9
    assert eigv([[[1.0, 0.0], [0.8, 0.6]]]) == pytest.approx(10 / 9)
    # c = -1 is clipped to 0: W = I -> L = 0 -> EigV = 2 (= 2/(1+0))
    assert eigv([[[1.0, 0.0]], [[-1.0, 0.0]]]) == pytest.approx(2.0)
    # a zero vector has cos 0 with the other vector (and 1 with itself): W = I -> 2
    assert eigv([[[1.0, 0.0], [0.0, 0.0]]]) == pytest.approx(2.0)


def test_eigv_counts_orthogonal_groups():
    # M=2, K=2: responses e1, e2 | e1, e2 -> two groups {e1, e1} and {e2, e2}. W is block diagonal with two
    # all-ones 2x2 blocks J; each block's degrees are 2, D^-1/2 J D^-1/2 = J/2 has eigenvalues 1, 0, so L has
    # 0, 1 per block -> EigV = (1 - 0) + (1 - 1) + (1 - 0) + (1 - 1) = 2
    assert eigv([[E1, E2], [E1, E2]]) == pytest.approx(2.0)
    # unequal groups, {2 e1, e1} and {e3}: block J (degrees 2) -> eigenvalues 0, 1; block [1] (degree 1) ->
    # L = 1 - 1 = 0 -> EigV = 1 + 0 + 1 = 2
    assert eigv([[2 * E1], [E1], [E3]]) == pytest.approx(2.0)


def test_eigv_extremes():
    # identical (up to scale): W = J (N x N), degrees N, J/N has eigenvalues 1 (once), 0 (N-1 times),
    # so L has 0 once and 1 N-1 times -> EigV = 1
    assert eigv([[[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]], [[1.0, 1.0], [0.5, 0.5], [1.0, 1.0]]]) == pytest.approx(1.0)
    # N mutually orthogonal: W = D = I, L = 0 -> EigV = N
    assert eigv([[E1], [E2], [E3]]) == pytest.approx(3.0)
    assert eigv(np.eye(4).reshape(2, 2, 4)) == pytest.approx(4.0)


# --- SPUQ ---------------------------------------------------------------------------------------------

def test_spuq_weights_by_input_similarity_to_the_anchor():
    # M=3, K=1. Questions: q0 = (1, 0) anchor, q1 = (2, 0) -> s_in = 1, q2 = (3, 4) -> s_in = 3/5.
    # Responses: anchor (1, 0); paraphrase 1 (0, 5) -> s_out = 0; paraphrase 2 (2, 0) -> s_out = 1.
    # confidence = (1*0 + 0.6*1) / (1 + 0.6) = 0.375 -> SPUQ = 0.625
    Q = [[1.0, 0.0], [2.0, 0.0], [3.0, 4.0]]
    H = [[[1.0, 0.0]], [[0.0, 5.0]], [[2.0, 0.0]]]
    assert spuq(H, Q) == pytest.approx(0.625)
    # swap paraphrases 1 and 2's questions: weights 0.6 on s_out 0, 1 on s_out 1 -> 1/1.6 = 0.625 -> 0.375
    assert spuq(H, [Q[0], Q[2], Q[1]]) == pytest.approx(0.375)


def test_spuq_averages_clipped_cosines_over_k_by_k_pairs():
    # M=2, K=2; one perturbation, so its weight (cos((1,0),(1,1)) = 1/sqrt 2) cancels: confidence = s_out.
    # anchor responses a0 = (1, 0), a1 = (0, 1); paraphrase-1 responses b0 = (-1, 0), b1 = (1, 0).
    # cosines: (a0,b0) = -1 -> 0, (a0,b1) = 1, (a1,b0) = 0, (a1,b1) = 0 -> s_out = 1/4 -> SPUQ = 0.75
    # (clipping the mean instead would give mean(-1, 1, 0, 0) = 0 -> 1.0)
    H = [[[1.0, 0.0], [0.0, 1.0]], [[-1.0, 0.0], [1.0, 0.0]]]
    assert spuq(H, [[1.0, 0.0], [1.0, 1.0]]) == pytest.approx(0.75)


def test_spuq_falls_back_to_uniform_weights():
    # q1 = (0, 1) is orthogonal to q0 = (1, 0), q2 = (-1, 0) has cos -1 -> 0: both weights 0 -> uniform.
    # s_out: paraphrase 1 (1, 0) vs anchor (1, 0) -> 1; paraphrase 2 (0, 1) -> 0 -> confidence 0.5
    H = [[[1.0, 0.0]], [[1.0, 0.0]], [[0.0, 1.0]]]
    assert spuq(H, [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]) == pytest.approx(0.5)


def test_spuq_extremes_and_bad_shapes():
    Q = [[1.0, 0.0], [1.0, 0.1], [1.0, 0.2]]
    # every response identical: each s_out = 1 -> confidence 1 -> SPUQ = 0
    assert spuq(np.ones((3, 2, 2)), Q) == pytest.approx(0.0)
    # every perturbed response orthogonal to every anchor response: each s_out = 0 -> SPUQ = 1
    H = [[E1, E1], [E2, E3], [E3, E3]]
    assert spuq(H, [[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [1.0, 0.0, 1.0]]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="M >= 2"):
        spuq(np.ones((1, 2, 2)), [[1.0, 0.0]])
    with pytest.raises(ValueError, match="question_embeddings must have shape"):
        spuq(np.ones((3, 2, 2)), Q[:2])
