"""Paraphrase gates on hand-written pairs; every expected verdict is derived by hand in the comments.

Similarity is fed by a stub embedder whose vectors are chosen so the cosine is known exactly; one
test uses the real MiniLM where the expected value follows from the model being uncased.
"""

import math

import numpy as np
import pytest

from editprobe.dataset_builder.gates import (GateReport, gate_paraphrases, levenshtein_ratio, load_scheme, summarise,
                                             word_jaccard)

Q = "Which family does Epaspidoceras belong to?"  # 42 characters, 6 distinct words
assert len(Q) == 42


class StubEmbedder:
    """Unit vectors in 2-D: the original at angle 0, each paraphrase at the angle whose cosine we want."""

    def __init__(self, cosines: dict[str, float]):
        self.cosines = cosines

    def encode(self, texts):
        out = []
        for t in texts:
            c = self.cosines.get(t, 1.0)
            out.append([c, math.sqrt(max(0.0, 1 - c * c))])
        return np.asarray(out, dtype=np.float64)


def _verdicts(paraphrases, cosines, scheme="llama2", original=Q, subject="Epaspidoceras"):
    items = [{"level": lvl, "rephrase": text} for lvl, text in paraphrases]
    return gate_paraphrases(load_scheme(scheme), original, subject, items, StubEmbedder(cosines))


def test_metrics_by_hand():
    # lower-casing one letter: 1 edit / 42 chars; word sets equal.
    assert levenshtein_ratio(Q, "which family does Epaspidoceras belong to?") == pytest.approx(1 / 42)
    assert word_jaccard(Q, "which family does Epaspidoceras belong to?") == 1.0
    # belong -> pertain: 5 substitutions + 1 insertion = 6 edits; words: 5 shared of 7 in the union.
    assert levenshtein_ratio(Q, "Which family does Epaspidoceras pertain to?") == pytest.approx(6 / 42)
    assert word_jaccard(Q, "Which family does Epaspidoceras pertain to?") == pytest.approx(5 / 7)


def test_llama2_accepts_a_good_six_level_set():
    good = [(1, "which family does Epaspidoceras belong to?"),       # lev 1/42, jac 1
            (2, "Which family does Epaspidoceras pertain to?"),      # lev 6/42 = .143, jac 5/7 = .714
            (3, "Epaspidoceras is a member of which family?"),
            (4, "To what taxonomic family is Epaspidoceras assigned?"),
            (5, "I wonder which family Epaspidoceras is classified under."),
            (6, "Biologists place Epaspidoceras in which family of the tree of life?")]
    cos = {good[0][1]: 0.99, good[1][1]: 0.93, good[2][1]: 0.85, good[3][1]: 0.75, good[4][1]: 0.65,
           good[5][1]: 0.5}  # L6 floor is inclusive (>= 0.5)
    verdicts = _verdicts(good, cos)
    assert [(v.level, v.passed, v.reasons) for v in verdicts] == [(i, True, []) for i in range(1, 7)]


def test_llama2_rejections_name_their_reason():
    bad = [(1, "Which family does Epaspidoceras belong to, exactly?"),  # +9 chars: lev 9/42=.214; jac 6/7=.857
           (2, "which family does Epaspidoceras belong to?"),          # lev 1/42 < .10; jac 1 > .9
           (3, "Which family does it belong to?"),                     # subject dropped
           (4, "Which family does Epaspidoceras belong to ?"),         # lev 1/42 <= .25
           (5, "Which family is Epaspidoceras in?"),                   # similarity .6 not > .6
           (6, "Which family is Epaspidoceras in?")]                   # same text as level 5
    cos = {bad[4][1]: 0.6}
    v = {x.level: x for x in _verdicts(bad, cos)}
    assert not any(x.passed for x in v.values())
    assert v[1].reasons == ["levenshtein 0.214 >= 0.1", "jaccard 0.857 <= 0.9"]
    assert v[2].reasons == ["levenshtein 0.024 < 0.1", "jaccard 1.000 > 0.9"]
    assert v[3].reasons[0] == "subject missing"
    assert v[4].reasons == ["levenshtein 0.024 <= 0.25"]
    assert v[5].reasons == ["similarity 0.600 <= 0.6"]
    assert v[6].reasons == ["same text as level 5"]


def test_l1_edit_distance_bound_is_strict():
    # "aaaa bbbbb" -> "aaaa bbbbc": one substitution in 10 characters = exactly 0.10, not < 0.10.
    v = _verdicts([(1, "aaaa bbbbc")], {}, original="aaaa bbbbb", subject=None)[0]
    assert not v.passed and v.reasons[0].startswith("levenshtein 0.100 >= 0.1")


def test_identical_paraphrase_is_rejected():
    v = _verdicts([(3, Q)], {})[0]
    assert "identical to the original" in v.reasons


def test_llama3_reordering_level_keeps_words():
    # "Epaspidoceras belongs to which family?" vs Q: words {epaspidoceras, belongs, to, which, family} vs
    # {which, family, does, epaspidoceras, belong, to}: 4 shared of 7 -> jac .571 < .6 -> rejected at L4.
    v = _verdicts([(4, "Epaspidoceras belongs to which family?")], {"Epaspidoceras belongs to which family?": .9},
                  scheme="llama3")[0]
    assert not v.passed and v.reasons == ["jaccard 0.571 < 0.6"]


def test_report_counts_per_level():
    report = GateReport("llama2")
    report.add(_verdicts([(1, "which family does Epaspidoceras belong to?"), (2, "Which family does it belong?")],
                         {"Which family does it belong?": 0.95}))
    d = report.as_dict()
    assert {k: v for k, v in d["1"].items() if k != "passed_distribution"} == {"passed": 1, "failed": 0, "reasons": {}}
    assert d["2"]["failed"] == 1 and d["2"]["reasons"]["subject missing"] == 1
    assert "L2: 0/1 passed" in report.format()
    # the passing L1 paraphrase: one capital changed in 42 characters, the same 6 words
    dist = d["1"]["passed_distribution"]
    assert dist["levenshtein"]["p50"] == pytest.approx(1 / 42, abs=1e-4) and dist["words"]["mean"] == 6
    assert d["2"]["passed_distribution"] == {}  # only passing paraphrases are summarised


def test_summarise_interpolates_percentiles_linearly():
    # [1, 2, 3, 4]: position q*(n-1) -> p10 at 0.3 (1.3), p50 at 1.5 (2.5), p90 at 2.7 (3.7); mean 2.5
    assert summarise([4.0, 1.0, 3.0, 2.0]) == {"mean": 2.5, "p10": 1.3, "p50": 2.5, "p90": 3.7}
    assert summarise([]) == {}


def test_real_minilm_is_case_insensitive(embedder):
    # all-MiniLM-L6-v2 lower-cases its input, so a case-only change embeds identically (cosine 1).
    assert embedder.similarity(Q, Q.lower()) == pytest.approx(1.0, abs=1e-5)
    v = gate_paraphrases(load_scheme("llama2"), Q, "Epaspidoceras",
                         [{"level": 1, "rephrase": "which family does Epaspidoceras belong to?"}], embedder)[0]
    assert v.passed


def test_subject_match_ignores_case_and_whitespace_runs():
    from editprobe.dataset_builder.gates import contains_subject

    # WikiData_counterfact record 765's subject has a double space; a newquestion is stored whitespace-collapsed
    assert contains_subject("Where was Wu Xinghuan born?", "Wu  Xinghuan")
    assert contains_subject("where was wu  xinghuan born?", "Wu Xinghuan")
    assert not contains_subject("Where was Wu Xing born?", "Wu  Xinghuan")
