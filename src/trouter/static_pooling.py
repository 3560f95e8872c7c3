"""Encoding with a static (model2vec) model at the speed of its arithmetic, not its tokenizer.

A static model's vector for a text is the mean of its tokens' embedding rows, so nearly all
the work is tokenising: through ``tokenizers`` the packaged model's BERT pipeline (normalise,
split into words and punctuation, WordPiece each word) costs about 70 µs a GSM8K question,
and model2vec then averages each text in its own numpy call.

Here, for printable-ASCII text (97% of the public suites' queries) BERT's normalisation is
lower-casing and its split a regular expression, and WordPiece depends on the word alone,
so the ids of each word are cached (bounded) and reused: the same ids at about a third of
the cost. Any other text (accents, CJK, control characters, the tokenizer's own special
tokens such as ``[MASK]``) goes through the tokenizer itself, as does every text when the
tokenizer is not this BERT pipeline. The means are one sparse (texts x vocabulary) product.
``tests/test_static_pooling.py`` checks ids and vectors against tokenizers and model2vec.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from itertools import chain
from typing import Any

import numpy as np
from scipy import sparse

#: Printable ASCII and the three whitespace controls BERT's clean-up turns into spaces.
PLAIN_TEXT = re.compile(r"[\t\n\r\x20-\x7e]*")
#: BERT's pre-tokenizer on lower-cased plain text: runs of letters and digits, and every
#: other non-space character alone (all printable ASCII non-alphanumerics are punctuation).
WORD = re.compile(r"[a-z0-9]+|[^a-z0-9\s]")
#: Joins a batch's texts for one pass of WORD; plain text never contains it.
SEPARATOR = "\x00"


def is_bert_wordpiece(tokenizer: Any) -> bool:
    """True when the tokenizer is the lower-casing BERT pipeline the word cache reproduces."""
    normalizer, pre = tokenizer.normalizer, tokenizer.pre_tokenizer
    return (
        type(normalizer).__name__ == "BertNormalizer"
        and bool(getattr(normalizer, "lowercase", False))
        and bool(getattr(normalizer, "clean_text", False))
        and type(pre).__name__ == "BertPreTokenizer"
        and type(tokenizer.model).__name__ == "WordPiece"
    )


class StaticPooler:
    """L2-normalised mean token embeddings of texts, as model2vec's ``encode`` computes them.

    ``max_words`` bounds the word cache (it is emptied when full), so a server's memory does
    not grow with the words it sees.
    """

    def __init__(
        self,
        tokenizer: Any,
        embedding: np.ndarray,
        unk_token_id: int | None,
        max_words: int = 100_000,
    ) -> None:
        self.tokenizer = tokenizer
        self.embedding = np.ascontiguousarray(embedding, dtype=np.float32)
        # model2vec drops unknown tokens before averaging: weight 0
        self.token_weight = np.ones(len(self.embedding), dtype=np.float32)
        if unk_token_id is not None:
            self.token_weight[unk_token_id] = 0.0
        truncation = tokenizer.truncation
        self.max_tokens: int | None = truncation["max_length"] if truncation else None
        self.specials = [t.content for t in tokenizer.get_added_tokens_decoder().values()]
        self.word_cache = is_bert_wordpiece(tokenizer)
        self.max_words = max_words
        self._words: dict[str, list[int]] = {}

    @classmethod
    def from_model2vec(cls, model: Any) -> StaticPooler:
        """The pooler of a ``model2vec.StaticModel``: one row per token id, with the model's
        token mapping (vocabulary quantisation) and per-token weights applied once here."""
        table = np.asarray(model.embedding, dtype=np.float32)
        if model.token_mapping is not None:
            table = table[np.asarray(model.token_mapping)]
        if model.weights is not None:
            table = table * np.asarray(model.weights, dtype=np.float32)[:, None]
        return cls(model.tokenizer, table, model.unk_token_id)

    def _cacheable(self, text: str) -> bool:
        return (
            self.word_cache
            # no truncation to think of: a text has at most as many tokens as characters
            and (self.max_tokens is None or len(text) <= self.max_tokens)
            and PLAIN_TEXT.fullmatch(text) is not None
            and not any(special in text for special in self.specials)
        )

    def _word_ids(self, word: str) -> list[int]:
        if len(self._words) >= self.max_words:
            self._words.clear()
        self._words[SEPARATOR] = [-1]
        ids = self._words[word] = self.tokenizer.encode(word, add_special_tokens=False).ids
        return ids

    def _plain_ids(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """CSR (flat ids, row pointers) of cacheable texts, in one pass over all their words:
        the texts are joined by a separator character that is a "word" of its own."""
        self._words[SEPARATOR] = [-1]
        words = WORD.findall(SEPARATOR.join(texts).lower())
        pieces = list(map(self._words.get, words))
        if None in pieces:
            for j in [j for j, ids in enumerate(pieces) if ids is None]:
                pieces[j] = self._words.get(words[j]) or self._word_ids(words[j])
        flat = np.fromiter(chain.from_iterable(pieces), dtype=np.int64)
        cuts = np.flatnonzero(flat < 0)
        indptr = np.concatenate([[0], cuts - np.arange(len(cuts)), [len(flat) - len(cuts)]])
        return flat[flat >= 0], indptr

    def _tokenizer_ids(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        encodings = self.tokenizer.encode_batch_fast(texts, add_special_tokens=False)
        ids = [encoding.ids for encoding in encodings]
        indptr = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, ids), dtype=np.int64, count=len(ids)), out=indptr[1:])
        return np.fromiter(chain.from_iterable(ids), dtype=np.int64, count=indptr[-1]), indptr

    def _parts(self, texts: Sequence[str]) -> Iterator[tuple[list[int], np.ndarray, np.ndarray]]:
        """(rows, flat ids, row pointers) for the cacheable texts, then for the others."""
        plain = [i for i, text in enumerate(texts) if self._cacheable(text)]
        chosen = set(plain)
        others = [i for i in range(len(texts)) if i not in chosen]
        for rows, ids_of in ((plain, self._plain_ids), (others, self._tokenizer_ids)):
            if rows:
                yield rows, *ids_of([texts[i] for i in rows])

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Each text's token ids, exactly as ``tokenizer.encode_batch_fast`` gives them."""
        out: list[list[int]] = [[] for _ in texts]
        for rows, flat, indptr in self._parts(texts):
            for r, i in enumerate(rows):
                out[i] = flat[indptr[r] : indptr[r + 1]].tolist()
        return out

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) float32, rows of unit length (a text without known tokens: zeros)."""
        sums = np.zeros((len(texts), self.embedding.shape[1]), dtype=np.float32)
        for rows, flat, indptr in self._parts(texts):
            shape = (len(rows), len(self.embedding))
            tokens = sparse.csr_matrix((self.token_weight[flat], flat, indptr), shape=shape)
            sums[rows] = tokens @ self.embedding
        # the mean's direction is the sum's: normalising makes dividing by the count moot
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        return sums / np.where(norms > 0, norms, 1.0)
