"""Embedding-dispersion uncertainty (seed paper, Appendix C.1) and its change under a model edit.

For one record, ``H`` has shape (M, K, d): ``H[j, i]`` is the embedding h_i^(j) of sampled response i
(K = 5) to paraphrase j (M = 6). Aleatoric uncertainty is the spread of responses around their
paraphrase's centroid; epistemic uncertainty is the spread of the centroids across paraphrases.

Records are then aggregated into ΔU with 95% paired-bootstrap confidence intervals
(``summarize_delta``, ``breakdown``). Estimators wrap the per-record formulas behind one uniform,
lm-polygraph-style interface (``Estimator``, ``build_estimator``).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

import numpy as np

from editprobe.registry import Registry

DISTANCES = ("euclidean", "cosine")

# MiniLM embeddings are unit-norm, so every distance lies in [0, 2] and a typical U_pre is O(0.1-1).
# U_pre is exactly 0 when all M*K = 30 sampled answers embed identically (e.g. the same short string),
# which would make ΔU infinite; 1e-3 sits well below any non-degenerate U_pre and caps that case.
DEFAULT_FLOOR = 1e-3


def pairwise_distance(a: np.ndarray, b: np.ndarray, distance: str = "euclidean") -> np.ndarray:
    """Distance between ``a`` and ``b`` along the last axis, broadcasting the leading axes.

    "euclidean": ||a - b||_2 (Appendix C.1). "cosine": 1 - cos(a, b), in [0, 2]; a zero vector
    counts as orthogonal to everything (distance 1).
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if distance == "euclidean":
        return np.linalg.norm(a - b, axis=-1)
    if distance == "cosine":
        norms = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
        cos = np.sum(a * b, axis=-1) / np.where(norms > 0, norms, 1.0)
        return 1.0 - np.clip(cos, -1.0, 1.0)
    raise ValueError(f"unknown distance {distance!r}; known distances: {', '.join(DISTANCES)}")


def _as_embeddings(H: np.ndarray) -> np.ndarray:
    H = np.asarray(H, dtype=np.float64)
    if H.ndim != 3 or H.shape[0] < 1 or H.shape[1] < 1:
        raise ValueError(f"embeddings must have shape (M, K, d) with M, K >= 1, got {H.shape}")
    return H


def centroids(H: np.ndarray) -> np.ndarray:
    """Appendix C.1: c_j = (1/K) sum_i h_i^(j). (M, K, d) -> (M, d)."""
    return _as_embeddings(H).mean(axis=1)


def _aleatoric_per_level(H: np.ndarray, distance: str) -> np.ndarray:
    """alea_j = (1/K) sum_i d(h_i^(j), c_j), the inner term of U_alea (Appendix C.1). -> (M,)."""
    H = _as_embeddings(H)
    return pairwise_distance(H, centroids(H)[:, None, :], distance).mean(axis=1)  # (M, K) -> (M,)


def _centroid_distances(H: np.ndarray, distance: str) -> np.ndarray:
    """D[j, l] = d(c_j, c_l) (Appendix C.1). -> (M, M), symmetric."""
    C = centroids(H)  # (M, d)
    return pairwise_distance(C[:, None, :], C[None, :, :], distance)


def aleatoric_uncertainty(H: np.ndarray, distance: str = "euclidean") -> float:
    """Appendix C.1: U_alea = (1/M) sum_j (1/K) sum_i ||h_i^(j) - c_j||_2."""
    return float(_aleatoric_per_level(H, distance).mean())


def epistemic_uncertainty(H: np.ndarray, distance: str = "euclidean") -> float:
    """Appendix C.1: U_epis = (2 / (M(M-1))) sum_{j<l} ||c_j - c_l||_2; 0.0 for M = 1 (no pairs)."""
    D = _centroid_distances(H, distance)  # (M, M)
    j, l = np.triu_indices(D.shape[0], k=1)
    return float(D[j, l].mean()) if j.size else 0.0


def total_uncertainty(H: np.ndarray, distance: str = "euclidean") -> float:
    """Appendix C.1: U = (U_alea + U_epis) / 2."""
    return (aleatoric_uncertainty(H, distance) + epistemic_uncertainty(H, distance)) / 2


def level_uncertainty(H: np.ndarray, distance: str = "euclidean") -> np.ndarray:
    """Per-paraphrase share of U (Appendix C.1 terms): u_j = (alea_j + mean_{l!=j} ||c_j - c_l||) / 2.

    (M, K, d) -> (M,), with mean_j u_j == U exactly: mean_j alea_j = U_alea, and
    mean_j mean_{l!=j} D_jl = (1/(M(M-1))) sum_{j!=l} D_jl = (2/(M(M-1))) sum_{j<l} D_jl = U_epis
    since D is symmetric. For M = 1 the epistemic term is 0, as in ``epistemic_uncertainty``.
    """
    alea = _aleatoric_per_level(H, distance)  # (M,)
    D = _centroid_distances(H, distance)  # (M, M)
    M = D.shape[0]
    off_diag = ~np.eye(M, dtype=bool)
    epis = (D * off_diag).sum(axis=1) / (M - 1) if M > 1 else np.zeros(M)
    return (alea + epis) / 2


def relative_change(u_pre, u_post, floor: float = DEFAULT_FLOOR):
    """ΔU = (U_post - U_pre) / max(U_pre, floor), the relative change of Appendix C.1's U under an edit.

    The floor keeps ΔU finite when U_pre = 0 (all sampled answers embed identically); see
    ``DEFAULT_FLOOR``. Works elementwise on arrays; returns a float for scalar inputs.
    """
    if not floor > 0:
        raise ValueError(f"floor must be positive, got {floor}")
    u_pre, u_post = np.asarray(u_pre, dtype=np.float64), np.asarray(u_post, dtype=np.float64)
    out = (u_post - u_pre) / np.maximum(u_pre, floor)
    return float(out) if out.ndim == 0 else out


# --- Estimators: one uniform interface over the formulas above -------------------------------------


@runtime_checkable
class Estimator(Protocol):
    """Maps a record's statistics to one uncertainty score; higher = more uncertain.

    ``name`` encodes the parameters (e.g. "U_epis[cosine]") so results stay comparable;
    ``needs`` lists the keys of ``stats`` it reads ("embeddings": the (M, K, d) array).
    """

    @property
    def name(self) -> str: ...

    @property
    def needs(self) -> tuple[str, ...]: ...

    def __call__(self, stats: Mapping[str, np.ndarray]) -> float: ...


def _require_stats(estimator, stats: Mapping[str, object]) -> None:
    """Raise one clear error when ``stats`` lacks a key that ``estimator.needs`` declares."""
    missing = [k for k in estimator.needs if k not in stats]
    if missing:
        raise ValueError(f"{estimator.name} needs statistics {missing} that were not provided")


@dataclass(frozen=True)
class _EmbeddingEstimator:
    distance: str = "euclidean"
    needs: ClassVar[tuple[str, ...]] = ("embeddings",)
    symbol: ClassVar[str]
    formula: ClassVar[Callable[[np.ndarray, str], float]]  # one Appendix C.1 function per subclass

    def __post_init__(self):
        if self.distance not in DISTANCES:
            raise ValueError(f"unknown distance {self.distance!r}; known distances: {', '.join(DISTANCES)}")

    @property
    def name(self) -> str:
        return f"{self.symbol}[{self.distance}]"

    def __call__(self, stats: Mapping[str, np.ndarray]) -> float:
        _require_stats(self, stats)
        return self.formula(stats["embeddings"], self.distance)


@dataclass(frozen=True)
class AleatoricUncertainty(_EmbeddingEstimator):
    """U_alea (Appendix C.1)."""

    symbol: ClassVar[str] = "U_alea"
    formula = staticmethod(aleatoric_uncertainty)


@dataclass(frozen=True)
class EpistemicUncertainty(_EmbeddingEstimator):
    """U_epis (Appendix C.1)."""

    symbol: ClassVar[str] = "U_epis"
    formula = staticmethod(epistemic_uncertainty)


@dataclass(frozen=True)
class TotalUncertainty(_EmbeddingEstimator):
    """U = (U_alea + U_epis) / 2 (Appendix C.1)."""

    symbol: ClassVar[str] = "U"
    formula = staticmethod(total_uncertainty)


# LexSim, EigV and SPUQ: baselines from the uncertainty literature, scored on the same samples.

_WORD = re.compile(r"\w+")


def _token_ids(texts: Sequence[str]) -> list[np.ndarray]:
    """Each text's word tokens as integer ids shared across ``texts`` (so tokens compare as ints).

    Tokens: the text lowercased, then its maximal runs of Unicode letters, digits and "_"; whitespace and
    punctuation only separate ("Don't stop!" -> ["don", "t", "stop"]).
    """
    vocab: dict[str, int] = {}
    return [np.array([vocab.setdefault(w, len(vocab)) for w in _WORD.findall(t.lower())], dtype=np.int64)
            for t in texts]


def _lcs_length(x: np.ndarray, y: np.ndarray) -> int:
    """Length of the longest common subsequence of two token-id sequences."""
    if len(x) > len(y):
        x, y = y, x
    # DP row i: L[i, j] = max(L[i-1, j], L[i-1, j-1] + [x_i == y_j], L[i, j-1]); the last term makes the row
    # the running maximum of the first two, so each token of x is one vectorised pass over y.
    row = np.zeros(len(y) + 1, dtype=np.int64)  # L[i, 0..|y|]
    for tok in x:
        row[1:] = np.maximum.accumulate(np.maximum(row[1:], row[:-1] + (y == tok)))
    return int(row[-1])


def _rouge_l_tokens(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) == 0 or len(y) == 0:
        return 1.0 if len(x) == len(y) else 0.0
    if np.array_equal(x, y):  # sampled answers often repeat verbatim
        return 1.0
    return 2.0 * _lcs_length(x, y) / (len(x) + len(y))


def rouge_l(a: str, b: str) -> float:
    """ROUGE-L F1 (Lin 2004, beta = 1) of two texts: 2 LCS / (|a| + |b|) on ``_token_ids`` word tokens.

    With P = LCS/|a| and R = LCS/|b|, F1 = 2PR / (P + R) = 2 LCS / (|a| + |b|), symmetric in a and b.
    Both texts without tokens: 1.0; exactly one: 0.0.
    """
    x, y = _token_ids([a, b])
    return _rouge_l_tokens(x, y)


def _flat_responses(responses: Sequence[Sequence[str]]) -> list[str]:
    """M lists of K strings -> the M*K strings, paraphrase by paraphrase."""
    flat = []
    for row in responses:
        if isinstance(row, str):
            raise ValueError("responses must be M lists of K strings, got a list of strings")
        for text in row:
            if not isinstance(text, str):
                raise ValueError(f"responses must be strings, got {type(text).__name__}")
            flat.append(text)
    return flat


def lexical_similarity_uncertainty(responses: Sequence[Sequence[str]]) -> float:
    """LexSim = -(mean ROUGE-L F1 over unordered pairs of the M*K responses); see ``LexicalSimilarity``."""
    ids = _token_ids(_flat_responses(responses))
    if len(ids) < 2:  # no pair to disagree: as similar as can be
        return -1.0
    a, b = np.triu_indices(len(ids), k=1)
    return -float(np.mean([_rouge_l_tokens(ids[i], ids[j]) for i, j in zip(a, b)]))


def _clipped_cosine(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """(n, d), (m, d) -> (n, m): max(cos(a, b), 0); a zero vector has cosine 0 with every vector."""
    def unit(X: np.ndarray) -> np.ndarray:
        norms = np.linalg.norm(X, axis=-1, keepdims=True)
        return X / np.where(norms > 0, norms, 1.0)

    return np.clip(unit(A) @ unit(B).T, 0.0, 1.0)


def eigv_uncertainty(H: np.ndarray) -> float:
    """U_EigV (Lin, Trivedi & Sun 2023) over the M*K response embeddings; see ``EigenvalueUncertainty``."""
    H = _as_embeddings(H)
    X = H.reshape(-1, H.shape[-1])  # (N, d), N = M*K
    W = _clipped_cosine(X, X)  # (N, N)
    np.fill_diagonal(W, 1.0)  # a zero vector too is identical to itself
    d_inv_sqrt = 1.0 / np.sqrt(W.sum(axis=1))  # (N,); every degree is >= 1 thanks to the diagonal
    L = np.eye(len(X)) - d_inv_sqrt[:, None] * W * d_inv_sqrt[None, :]  # I - D^-1/2 W D^-1/2
    return float(np.maximum(0.0, 1.0 - np.linalg.eigvalsh(L)).sum())


def spuq_uncertainty(H: np.ndarray, Q: np.ndarray) -> float:
    """1 - SPUQ inter-sample confidence (Gao et al. 2024), anchored at paraphrase 0; see ``SPUQUncertainty``."""
    H, Q = _as_embeddings(H), np.asarray(Q, dtype=np.float64)
    M = H.shape[0]
    if Q.ndim != 2 or Q.shape[0] != M:
        raise ValueError(f"question_embeddings must have shape (M, d) with M = {M}, got {Q.shape}")
    if M < 2:
        raise ValueError("SPUQ needs M >= 2 paraphrases (the anchor and at least one perturbation), got M = 1")
    w = _clipped_cosine(Q[:1], Q[1:])[0]  # (M-1,): s_in(x_0, x_j)
    s_out = np.array([_clipped_cosine(H[0], H[j]).mean() for j in range(1, M)])  # (M-1,), each a K x K mean
    if not w.sum() > 0:  # no paraphrase resembles the anchor: weigh them all alike
        w = np.ones_like(w)
    return float(1.0 - (w * s_out).sum() / w.sum())


@dataclass(frozen=True)
class _StatisticEstimator:
    """An estimator without parameters: ``name`` is its symbol, so "EigV" round-trips."""

    symbol: ClassVar[str]
    needs: ClassVar[tuple[str, ...]]

    @property
    def name(self) -> str:
        return self.symbol


@dataclass(frozen=True)
class LexicalSimilarity(_StatisticEstimator):
    """LexSim: minus the mean pairwise ROUGE-L F1 of the sampled responses (Fomicheva et al. 2020).

    LexSim = -(2 / (N(N-1))) sum_{a<b} ROUGE-L(y_a, y_b) over the N = M*K responses y of all paraphrases,
    with ROUGE-L(y_a, y_b) = 2 LCS(y_a, y_b) / (|y_a| + |y_b|), the F1 (beta = 1) of LCS precision and recall
    (Lin 2004), LCS the longest common subsequence of word tokens. Tokens: the response lowercased, then its
    maximal runs of Unicode letters, digits and "_" (whitespace and punctuation only separate). Two responses
    without tokens have similarity 1.0, one without tokens and one with 0.0. In [-1, 0], higher = more
    uncertain; -1.0 for a single response (no pairs). This is the lexical-similarity score of Fomicheva et al.
    2020 (TACL, "Unsupervised Quality Estimation for Neural Machine Translation") with ROUGE-L as the
    similarity, as in lm-polygraph's LexicalSimilarity.
    """

    symbol: ClassVar[str] = "LexSim"
    needs: ClassVar[tuple[str, ...]] = ("responses",)

    def __call__(self, stats: Mapping[str, object]) -> float:
        _require_stats(self, stats)
        return lexical_similarity_uncertainty(stats["responses"])


@dataclass(frozen=True)
class EigenvalueUncertainty(_StatisticEstimator):
    """EigV: sum of max(0, 1 - eigenvalue) of the responses' similarity-graph Laplacian (Lin et al. 2023).

    Over the N = M*K response embeddings h_a (all paraphrases pooled): W_ab = max(cos(h_a, h_b), 0), i.e.
    negative cosines clipped to 0, with W_aa = 1 and cos = 0 between a zero vector and any other vector;
    D = diag(sum_b W_ab); L = I - D^{-1/2} W D^{-1/2}; EigV = sum_k max(0, 1 - lambda_k) over the eigenvalues
    lambda_k of L. It counts semantic clusters softly: 1.0 when all responses embed alike, N when they are
    mutually orthogonal. Source: Lin, Trivedi & Sun 2023, "Generating with Confidence: Uncertainty
    Quantification for Black-box Large Language Models" (U_EigV); they build W from NLI or Jaccard
    similarity, here it is the embedding cosine.
    """

    symbol: ClassVar[str] = "EigV"
    needs: ClassVar[tuple[str, ...]] = ("embeddings",)

    def __call__(self, stats: Mapping[str, np.ndarray]) -> float:
        _require_stats(self, stats)
        return eigv_uncertainty(stats["embeddings"])


@dataclass(frozen=True)
class SPUQUncertainty(_StatisticEstimator):
    """SPUQ: 1 - input-similarity-weighted output agreement with the anchor paraphrase (Gao et al. 2024).

    confidence = sum_j s_in(x_0, x_j) s_out(y_0, y_j) / sum_j s_in(x_0, x_j) over j = 1..M-1, SPUQ = 1 -
    confidence, in [0, 1]. s_in(x_0, x_j) = max(cos(q_0, q_j), 0) for the question embeddings q;
    s_out(y_0, y_j) = (1/K^2) sum_{i, i'} max(cos(h_i^(0), h_i'^(j)), 0), each of the K x K cosines between the
    anchor's and paraphrase j's responses clipped at 0 before averaging; a zero vector has cosine 0. When
    every s_in is 0 the weights fall back to uniform (plain mean of s_out). Needs M >= 2. Source: the
    inter-sample aggregation of Gao et al. 2024 (EACL), "SPUQ: Perturbation-Based Uncertainty Quantification
    for Large Language Models". Deviation: SPUQ anchors at the unperturbed input x_0 and its answer; this
    benchmark samples no answer to the original question, so the anchor is the mildest paraphrase (index 0)
    and x_1..x_{M-1} are the other paraphrases.
    """

    symbol: ClassVar[str] = "SPUQ"
    needs: ClassVar[tuple[str, ...]] = ("embeddings", "question_embeddings")

    def __call__(self, stats: Mapping[str, np.ndarray]) -> float:
        _require_stats(self, stats)
        return spuq_uncertainty(stats["embeddings"], stats["question_embeddings"])


ESTIMATORS: Registry[type] = Registry(
    "estimator", "editprobe.estimators", target_hint="package.module:Class",
    check=lambda obj: isinstance(obj, type) and callable(obj) and isinstance(getattr(obj, "needs", None), tuple),
    expected="an estimator class (callable on statistics, with a tuple `needs`)")
for _cls in (AleatoricUncertainty, EpistemicUncertainty, TotalUncertainty,
             LexicalSimilarity, EigenvalueUncertainty, SPUQUncertainty):
    ESTIMATORS.add(_cls.symbol, _cls)

_NAME = re.compile(r"^(?P<symbol>[A-Za-z_][\w.:]*?)(?:\[(?P<distance>[A-Za-z_]+)\])?$")


def build_estimator(name: str) -> Estimator:
    """"U_alea[cosine]" -> AleatoricUncertainty(distance="cosine"); a bare "U_alea" means euclidean.

    The symbol is looked up in :data:`ESTIMATORS` (built-ins, entry points of ``editprobe.estimators``,
    ``package.module:Class``); the bracket, when present, is passed as ``distance``, and is an error
    for an estimator that takes no ``distance`` ("EigV[cosine]").
    """
    match = _NAME.match(name.strip())
    if match is None:
        raise ESTIMATORS.unknown(name)
    cls = ESTIMATORS.get(match["symbol"])
    if match["distance"] and not _takes_distance(cls):
        raise ValueError(f"{match['symbol']} takes no [distance]; write it as {match['symbol']!r}")
    return cls(distance=match["distance"]) if match["distance"] else cls()


def _takes_distance(cls: type) -> bool:
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):  # signature unknowable (some C types): let the constructor decide
        return True
    return "distance" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


# --- Aggregation over records: ΔU with paired-bootstrap CIs ----------------------------------------


def _interval(value: float, boot: np.ndarray, alpha: float) -> dict:
    low, high = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    return {"value": float(value), "ci_low": float(low), "ci_high": float(high)}


def summarize_delta(u_pre, u_post, *, floor: float = DEFAULT_FLOOR, n_boot: int = 2000, seed: int = 0,
                    alpha: float = 0.05) -> dict:
    """Aggregate per-record U before/after an edit into ΔU with (1 - alpha) paired-bootstrap CIs.

    Statistics, each {"value", "ci_low", "ci_high"}:
      "delta_u"        headline mean(U_post) / mean(U_pre) - 1 (ratio of means: one tiny U_pre cannot
                       dominate it; the floor applies to mean(U_pre) as in ``relative_change``),
      "delta_u_mean"   mean over records of relative_change(U_pre_r, U_post_r, floor): the seed's
                       "Δ_U (Ave)", an average of per-record relative changes,
      "delta_u_median" median over records of the same per-record changes (robust to a few records whose
                       U_pre is near 0),
      "abs_diff"       mean(U_post - U_pre),
      "u_pre", "u_post" the two means;
    plus "n", "n_floor" (records whose U_pre is below the floor, whose per-record ΔU the floor caps) and
    "params" (floor, n_boot, seed, alpha, verbatim). Paired bootstrap: each resample draws
    record indices with replacement and uses the same indices for pre and post; percentile CIs.
    n = 0 -> all values None; n = 1 -> each CI collapses to its value.
    """
    u_pre, u_post = np.asarray(u_pre, dtype=np.float64), np.asarray(u_post, dtype=np.float64)
    if u_pre.ndim != 1 or u_pre.shape != u_post.shape:
        raise ValueError(f"u_pre and u_post must be 1-D of equal length, got {u_pre.shape} and {u_post.shape}")
    if not 0 < alpha < 1 or n_boot < 1:
        raise ValueError(f"need 0 < alpha < 1 and n_boot >= 1, got alpha={alpha}, n_boot={n_boot}")
    n = u_pre.shape[0]
    keys = ("delta_u", "delta_u_mean", "delta_u_median", "abs_diff", "u_pre", "u_post")
    out: dict = {"n": n, "n_floor": int((u_pre < floor).sum()),
                 "params": {"floor": floor, "n_boot": n_boot, "seed": seed, "alpha": alpha}}
    if n == 0:
        out.update({k: {"value": None, "ci_low": None, "ci_high": None} for k in keys})
        return out

    def stats(pre: np.ndarray, post: np.ndarray) -> dict[str, np.ndarray]:
        # pre, post: (..., n) -> each statistic (...,); same code for the point estimate and the resamples.
        mean_pre, mean_post = pre.mean(axis=-1), post.mean(axis=-1)
        return {"delta_u": relative_change(mean_pre, mean_post, floor),
                "delta_u_mean": relative_change(pre, post, floor).mean(axis=-1),
                "delta_u_median": np.median(relative_change(pre, post, floor), axis=-1),
                "abs_diff": (post - pre).mean(axis=-1),
                "u_pre": mean_pre, "u_post": mean_post}

    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))  # (n_boot, n), shared by pre and post
    point, boot = stats(u_pre, u_post), stats(u_pre[idx], u_post[idx])  # scalars; (n_boot,) each
    out.update({k: _interval(point[k], boot[k], alpha) for k in keys})
    return out


def breakdown(u_pre, u_post, groups: Sequence[str], **kw) -> dict[str, dict]:
    """``summarize_delta`` per group (e.g. topic, adoption group), groups in first-appearance order."""
    u_pre, u_post = np.asarray(u_pre, dtype=np.float64), np.asarray(u_post, dtype=np.float64)
    labels = np.asarray(list(groups), dtype=object)
    if labels.shape != u_pre.shape:
        raise ValueError(f"groups must have one label per record: {labels.shape[0]} labels for {u_pre.shape} records")
    return {g: summarize_delta(u_pre[labels == g], u_post[labels == g], **kw) for g in dict.fromkeys(groups)}
