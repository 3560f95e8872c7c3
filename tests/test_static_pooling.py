"""The static encoder's fast path gives the tokenizer's ids and model2vec's vectors.

Real texts (the RouterBench fixture cut and the shipped GSM8K questions) plus the cases the
word cache must hand back to the tokenizer: accents, CJK, control characters, the
tokenizer's special tokens, words over WordPiece's length limit, texts past truncation.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from trouter.config import data_dir
from trouter.data.suites import load_suite
from trouter.encoders import get_encoder
from trouter.static_pooling import StaticPooler

EDGE_CASES = [
    "[MASK] is a special token, [mask] is not",
    "[UNK] and [CLS] stay special",
    "x" * 150 + " longer than wordpiece's 100 characters",
    "word " * 700,  # past the 512-token truncation
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9",
    "\u4e2d\u6587 mixed with text",
    "tab\tnew\nline\rreturn",
    "a\x01b control characters vanish",
    "don't stop-believing!!! (x+y)^2 = {a|b} ~ `q` #1 $2.50 @home",
    "UPPER lower MiXeD 123abc abc123",
    "   ",
    "",
]


@pytest.fixture(scope="module")
def static():
    return get_encoder("static")


@pytest.fixture(scope="module")
def texts() -> list[str]:
    with (data_dir() / "questions" / "gsm8k_test.jsonl").open(encoding="utf-8") as fh:
        gsm8k = [json.loads(line)["question"] for line in fh][:800]
    return list(load_suite("routerbench").texts) + gsm8k + EDGE_CASES


def reference_ids(static, texts: list[str]) -> list[list[int]]:
    encodings = static.model.tokenizer.encode_batch_fast(texts, add_special_tokens=False)
    return [e.ids for e in encodings]


@pytest.mark.parametrize("batch", [1, 7, 1024])
def test_token_ids_are_the_tokenizers(static, texts, batch):
    pooler = StaticPooler.from_model2vec(static.model)
    assert pooler.word_cache  # the packaged model's tokenizer is BERT's: the fast path runs
    got = []
    for start in range(0, len(texts), batch):
        got += pooler.token_ids(texts[start : start + batch])
    expected = reference_ids(static, texts)
    assert [i for i, (a, b) in enumerate(zip(got, expected, strict=True)) if a != b] == []
    assert len(got[texts.index("word " * 700)]) == 512  # truncated as the tokenizer does


def test_vectors_match_model2vec(static, texts):
    vectors = StaticPooler.from_model2vec(static.model).encode(texts)
    reference = static.model.encode(texts, use_multiprocessing=False).astype(np.float32)
    norms = np.linalg.norm(reference, axis=1, keepdims=True)
    reference /= np.where(norms > 0, norms, 1.0)
    assert vectors.dtype == np.float32 and vectors.shape == (len(texts), static.dim)
    # model2vec averages in float16; the difference is that rounding, not a different vector
    assert np.abs(vectors - reference).max() < 2e-3
    assert np.linalg.norm(vectors[texts.index("   ")]) == 0.0  # no tokens: the zero vector


def test_the_word_cache_stays_bounded(static, texts):
    model = static.model
    pooler = StaticPooler(model.tokenizer, model.embedding, model.unk_token_id, max_words=50)
    for start in range(0, 400, 40):
        got = pooler.token_ids(texts[start : start + 40])
        assert got == reference_ids(static, texts[start : start + 40])
        assert len(pooler._words) <= 51  # the bound and the batch separator


def test_another_tokenizer_goes_through_the_tokenizer_itself(static, texts):
    from tokenizers import Tokenizer, pre_tokenizers

    tokenizer = Tokenizer.from_str(static.model.tokenizer.to_str())
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()  # not BERT's split any more
    pooler = StaticPooler(tokenizer, static.model.embedding, static.model.unk_token_id)
    assert not pooler.word_cache
    sample = texts[:50] + EDGE_CASES
    expected = [e.ids for e in tokenizer.encode_batch_fast(sample, add_special_tokens=False)]
    assert pooler.token_ids(sample) == expected
