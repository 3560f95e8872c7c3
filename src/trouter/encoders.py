"""Query encoders, chosen by name and recorded in every trained router.

* ``minilm``: the frozen all-MiniLM-L6-v2 sentence transformer (384-d, about 10 ms a query on
  one core).
* ``static``: a model2vec static embedding model distilled from the *same packaged* MiniLM on
  first use (offline, about 2 minutes once), then cached under ``cache_dir()/encoders``
  with the sha256 of its files recorded beside it (256-d, about 0.05 ms a query). A damaged
  or edited cached model is detected by the checksum and distilled again. A router trained
  with it carries a copy of its files (:func:`current_static_dir`); loading that router makes
  it this process's static model (:func:`use_static_model`), so serving never distils. The
  files themselves (distilling, checksums, cache entries) are :mod:`trouter.static_model`.

Distilling and the ``minilm`` encoder need ``trouter[train]`` (torch, sentence-transformers);
encoding with a distilled static model needs only model2vec's inference (numpy, tokenizers).

Both return L2-normalised float32 vectors. Every training text is cached on disk per encoder
(append-only ``.npz`` shards, written atomically, so concurrent or killed runs never corrupt
the cache). Query texts seen while serving (:meth:`TextEncoder.transient`) go to a bounded
in-memory LRU instead, so repeated prompts are not encoded twice and memory stays flat.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from trouter.config import cache_dir
from trouter.extras import require
from trouter.static_model import (  # noqa: F401  (MANIFEST: part of this module's API)
    MANIFEST,
    SOURCE_MODEL,
    STATIC_PCA_DIMS,
    _verified,
    cache_copy,
    minilm_path,
    quiet_transformers,
    static_checksum,
    static_model_dir,
)

ENCODERS = ("minilm", "static")
#: What a router saved before the encoder was recorded was trained with.
LEGACY_ENCODER = "minilm"
#: The dimension of each encoder's vectors.
ENCODER_DIMS = {"minilm": 384, "static": STATIC_PCA_DIMS}


class EncoderError(ValueError):
    """An unknown encoder name, or a router used with an encoder it was not trained with."""


def check_encoder(name: object) -> str:
    if name not in ENCODERS:
        raise EncoderError(f"unknown encoder {name!r}; choose from {', '.join(ENCODERS)}")
    return str(name)


def unicode_problem(text: str) -> str | None:
    """Why ``text`` cannot be encoded (a lone surrogate is not Unicode text), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return (
            f"is not valid Unicode text: it contains a lone surrogate "
            f"U+{ord(text[err.start]):04X} at character {err.start}"
        )
    return None


def _text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()[:32]


class QueryCache:
    """An LRU of query embeddings bounded in entries *and* bytes, with hit/miss counts."""

    def __init__(self, max_entries: int = 4096, max_bytes: int = 8 * 2**20) -> None:
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> np.ndarray | None:
        vector = self._items.get(key)
        if vector is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return vector

    def put(self, key: str, vector: np.ndarray) -> None:
        if key in self._items:
            return
        self._items[key] = vector
        self.bytes += vector.nbytes
        while self._items and (len(self._items) > self.max_entries or self.bytes > self.max_bytes):
            _, dropped = self._items.popitem(last=False)
            self.bytes -= dropped.nbytes


class TextEncoder:
    """Encodes texts to L2-normalised vectors; training texts are cached on disk.

    Subclasses provide ``name``, ``dim``, ``cache_folder`` and :meth:`_encode`.
    """

    name = "encoder"
    dim = 0

    def __init__(self, cache: Path | None = None, batch_size: int = 64) -> None:
        self.cache_path = cache or cache_dir() / "embeddings" / self.cache_folder()
        self.cache_path.mkdir(parents=True, exist_ok=True)
        self.batch_size = batch_size
        self._vectors: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        self.queries = QueryCache()
        self._load_shards()

    def cache_folder(self) -> str:
        raise NotImplementedError

    def _encode(self, texts: list[str], show_progress: bool) -> np.ndarray:
        raise NotImplementedError

    @contextmanager
    def transient(self) -> Iterator[None]:
        """In this block (this thread) new texts go to the bounded query LRU, not to disk: a
        server must not write a shard and keep a vector for every request it sees."""
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

    def encode(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        keys = [_text_key(t) for t in texts]
        transient = getattr(self._local, "transient", False)
        with self._lock:
            found: dict[str, np.ndarray] = {}
            missing: dict[str, str] = {}
            for key, text in zip(keys, texts, strict=True):
                vector = self._vectors.get(key)
                if vector is None and transient:
                    vector = self.queries.get(key)
                if vector is None:
                    missing[key] = text
                else:
                    found[key] = vector
            if missing:
                new_keys = list(missing)
                vectors = self._encode([missing[k] for k in new_keys], show_progress)
                fresh = dict(zip(new_keys, vectors, strict=True))
                if transient:
                    for key, vector in fresh.items():
                        self.queries.put(key, vector)
                else:
                    self._write_shard(new_keys, vectors)
                    self._vectors.update(fresh)
                found.update(fresh)
            return np.stack([found[k] for k in keys])

    def _write_shard(self, keys: list[str], vectors: np.ndarray) -> None:
        tmp = self.cache_path / f".tmp-{uuid.uuid4().hex}.npz"
        np.savez(tmp, keys=np.array(keys), vectors=vectors)
        tmp.rename(self.cache_path / f"shard-{uuid.uuid4().hex}.npz")


class MiniLMEncoder(TextEncoder):
    """The frozen all-MiniLM-L6-v2 sentence transformer on CPU."""

    name = "minilm"
    dim = 384

    def __init__(self, cache: Path | None = None, batch_size: int = 64) -> None:
        self._model = None
        super().__init__(cache, batch_size)

    def cache_folder(self) -> str:
        return SOURCE_MODEL  # the folder name used before encoders were selectable

    @property
    def model(self):
        if self._model is None:
            st = require("sentence_transformers", "the minilm encoder")
            with quiet_transformers():
                self._model = st.SentenceTransformer(minilm_path(), device="cpu")
        return self._model

    def _encode(self, texts: list[str], show_progress: bool) -> np.ndarray:
        return self.model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=show_progress,
        ).astype(np.float32)


class StaticEncoder(TextEncoder):
    """model2vec static embeddings distilled from the packaged MiniLM."""

    name = "static"
    dim = STATIC_PCA_DIMS

    def __init__(
        self, cache: Path | None = None, batch_size: int = 1024, model_dir: Path | None = None
    ) -> None:
        from model2vec import StaticModel

        from trouter.static_pooling import StaticPooler

        self.model_dir = model_dir or static_model_dir()
        self.model = StaticModel.from_pretrained(str(self.model_dir))
        self.pooler = StaticPooler.from_model2vec(self.model)
        self.checksum = static_checksum(self.model_dir)
        super().__init__(cache, batch_size)

    def cache_folder(self) -> str:
        return f"static-{self.checksum[:16]}"  # a re-distilled model gets a fresh cache

    def _encode(self, texts: list[str], show_progress: bool) -> np.ndarray:
        # model2vec's own encode gives the same vectors (to fp16 rounding) 3-4x slower: it
        # spends its time in the tokenizer and in one numpy mean per text (static_pooling)
        starts = range(0, len(texts), self.batch_size)
        if show_progress and len(starts) > 1:
            from rich.progress import track

            starts = track(starts, description="static encoding")
        parts = [self.pooler.encode(texts[i : i + self.batch_size]) for i in starts]
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), dtype=np.float32)


_ENCODERS: dict[str, TextEncoder] = {}
_ENCODERS_LOCK = threading.Lock()
#: The static model a loaded router carries, used in place of the cache's (see get_encoder).
_static_source: dict[str, Path] = {}


class StandInEncoder:
    """Fixed unit vectors of an encoder's dimension, for checking a loaded router's arrays
    without loading a model (see :func:`stand_in_encoders`)."""

    def __init__(self, name: str) -> None:
        self.name, self.dim = name, ENCODER_DIMS[name]
        vector = np.random.default_rng(0).standard_normal(self.dim).astype(np.float32)
        self._vector = vector / np.linalg.norm(vector)

    def encode(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        return np.tile(self._vector, (len(texts), 1))


_stand_in = threading.local()


@contextmanager
def stand_in_encoders() -> Iterator[None]:
    """In this block (this thread) :func:`get_encoder` gives :class:`StandInEncoder` objects."""
    previous = getattr(_stand_in, "active", False)
    _stand_in.active = True
    try:
        yield
    finally:
        _stand_in.active = previous


def get_encoder(name: str = LEGACY_ENCODER) -> TextEncoder:
    """The process-wide encoder of that name, shared by every router that uses it."""
    name = check_encoder(name)
    if getattr(_stand_in, "active", False):
        return StandInEncoder(name)  # type: ignore[return-value]
    with _ENCODERS_LOCK:
        if name not in _ENCODERS:
            if name == "static":
                _ENCODERS[name] = StaticEncoder(model_dir=_static_source.get("dir"))
            else:
                _ENCODERS[name] = MiniLMEncoder()
        return _ENCODERS[name]


def current_static_dir() -> Path | None:
    """The folder of the static model this process encodes with, if it has chosen one."""
    with _ENCODERS_LOCK:
        encoder = _ENCODERS.get("static")
        if isinstance(encoder, StaticEncoder):
            return encoder.model_dir
        return _static_source.get("dir")


def use_static_model(folder: Path, where: str) -> None:
    """Encode with the static model in ``folder`` (a router's verified copy) from now on; a
    copy goes to the cache, so the router directory may move or go once it is loaded.

    A process has one static model: if it already encodes with one whose files differ, the
    router (``where``) was trained with other vectors and is refused with an EncoderError.
    """
    if not _verified(folder, warn=False):
        raise EncoderError(f"{where}: the static encoder files fail their checksum manifest")
    checksum = static_checksum(folder)
    with _ENCODERS_LOCK:
        encoder = _ENCODERS.get("static")
        chosen = encoder.checksum if isinstance(encoder, StaticEncoder) else None
        if chosen is None and "dir" in _static_source:
            chosen = static_checksum(_static_source["dir"])
        if chosen is not None and chosen != checksum:
            raise EncoderError(
                f"{where} was trained with static encoder {checksum[:12]}, but this process "
                f"already encodes with static encoder {chosen[:12]}; serve routers trained "
                "with different static encoders from separate processes"
            )
        if chosen is None:
            _static_source["dir"] = cache_copy(folder, checksum)
