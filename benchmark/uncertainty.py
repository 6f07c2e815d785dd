"""Embedding-dispersion uncertainty (seed paper, Appendix C.1) and its change under a model edit.

For one record, ``H`` has shape (M, K, d): ``H[j, i]`` is the embedding h_i^(j) of sampled response i
(K = 5) to paraphrase j (M = 6). Aleatoric uncertainty is the spread of responses around their
paraphrase's centroid; epistemic uncertainty is the spread of the centroids across paraphrases.

Records are then aggregated into ΔU with 95% paired-bootstrap confidence intervals
(``summarize_delta``, ``breakdown``). Estimators wrap the per-record formulas behind one uniform,
lm-polygraph-style interface (``Estimator``, ``build_estimator``).
"""

from __future__ import annotations

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
        missing = [k for k in self.needs if k not in stats]
        if missing:
            raise ValueError(f"{self.name} needs statistics {missing} that were not provided")
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


ESTIMATORS: Registry[type] = Registry(
    "estimator", "editprobe.estimators", target_hint="package.module:Class",
    check=lambda obj: isinstance(obj, type) and callable(obj) and isinstance(getattr(obj, "needs", None), tuple),
    expected="an estimator class (callable on statistics, with a tuple `needs`)")
for _cls in (AleatoricUncertainty, EpistemicUncertainty, TotalUncertainty):
    ESTIMATORS.add(_cls.symbol, _cls)

_NAME = re.compile(r"^(?P<symbol>[A-Za-z_][\w.:]*?)(?:\[(?P<distance>[A-Za-z_]+)\])?$")


def build_estimator(name: str) -> Estimator:
    """"U_alea[cosine]" -> AleatoricUncertainty(distance="cosine"); a bare "U_alea" means euclidean.

    The symbol is looked up in :data:`ESTIMATORS` (built-ins, entry points of ``editprobe.estimators``,
    ``package.module:Class``); the bracket, when present, is passed as ``distance``.
    """
    match = _NAME.match(name.strip())
    if match is None:
        raise ESTIMATORS.unknown(name)
    cls = ESTIMATORS.get(match["symbol"])
    return cls(distance=match["distance"]) if match["distance"] else cls()


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
