"""Task-type assignment by embedding similarity: which taxonomy leaves does a query belong to?

No labels and no LLM: a query is compared, in the frozen encoder's space, with three anchors
per leaf: the leaf's profile text, the difficulty level's example query and the
subcategory's example query. The profile carries the task definition; the examples carry
the surface form real queries have (a multiple-choice stem, a function signature, a word
problem), which abstract definitions alone match poorly. The three cosine similarities are
averaged and turned into a soft assignment by a low-temperature softmax. This is the
MetricRouter baseline's task typing and a task-type prior for real queries no labeller saw.

Measured on real benchmark queries (see tests and the project report), the top-1 leaf
falls in the sensible *domain* for most exam-style, coding and math queries, but short
topic-heavy questions (open-domain factoids, commonsense questions without their options)
are often pulled towards the domain of their topic: the same modest task-type accuracy the
method's authors report.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from trouter.encoders import LEGACY_ENCODER, get_encoder
from trouter.taxonomy.model import Taxonomy


def leaf_embeddings(taxonomy: Taxonomy) -> np.ndarray:
    """(K, 384) L2-normalised embeddings of each leaf's profile text, in ``leaves()`` order."""
    return get_encoder().encode([leaf.profile_text() for leaf in taxonomy.leaves()])


def anchor_embeddings(taxonomy: Taxonomy, encoder: str = LEGACY_ENCODER) -> np.ndarray:
    """(3, K, D): profile text, difficulty example and subcategory example of each leaf."""
    leaves = taxonomy.leaves()
    texts = [leaf.profile_text() for leaf in leaves]
    texts += [leaf.path[2].example for leaf in leaves]
    texts += [leaf.path[1].example for leaf in leaves]
    return get_encoder(encoder).encode(texts).reshape(3, len(leaves), -1)


def leaf_similarity(
    taxonomy: Taxonomy,
    texts: Sequence[str],
    encoder: str = LEGACY_ENCODER,
    anchors: np.ndarray | None = None,
) -> np.ndarray:
    """(n, K) mean cosine similarity of each query with each leaf's three anchors
    (``anchors``: :func:`anchor_embeddings` of the same taxonomy and encoder, if at hand)."""
    if isinstance(texts, str):
        raise TypeError("pass a list of query texts, not a single string")
    queries = get_encoder(encoder).encode(list(texts))
    anchors = anchor_embeddings(taxonomy, encoder) if anchors is None else anchors
    if len(queries) == 0:
        return np.zeros((0, anchors.shape[1]))
    return np.einsum("nd,akd->nk", queries, anchors).astype(float) / len(anchors)


def soft_assignment(similarity: np.ndarray, temperature: float = 0.05) -> np.ndarray:
    """Row-wise softmax of similarities / temperature (rows sum to 1)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logits = similarity / temperature
    logits = logits - logits.max(axis=1, keepdims=True)
    weights = np.exp(logits)
    return weights / weights.sum(axis=1, keepdims=True)


def assign_leaves(
    taxonomy: Taxonomy, texts: Sequence[str], temperature: float = 0.05
) -> np.ndarray:
    """(n, K) soft assignment of queries to leaves (``taxonomy.leaves()`` order)."""
    return soft_assignment(leaf_similarity(taxonomy, texts), temperature)


def assign_top1(taxonomy: Taxonomy, texts: Sequence[str]) -> list[str]:
    """The most similar leaf id per query."""
    ids = taxonomy.leaf_ids()
    return [ids[k] for k in np.argmax(leaf_similarity(taxonomy, texts), axis=1)]
