"""Task-type assignment by embedding similarity: which taxonomy leaves does a query belong to?

No labels and no LLM: a query is compared, in the frozen encoder's space, with each leaf's
profile text and with the leaf's example query. The profile carries the task definition;
the example carries the surface form real queries have (a multiple-choice stem, a function
signature, a word problem), which the abstract definition alone matches poorly. The two
cosine similarities are averaged and turned into a soft assignment by a softmax with a low
temperature. This is the MetricRouter baseline's task typing and the fallback task-type
prior for real queries that no labeller has seen.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from trouter.encoders import get_encoder
from trouter.taxonomy.model import Taxonomy

#: Weight of the profile-text similarity; the rest goes to the example-query similarity.
PROFILE_WEIGHT = 0.5


def leaf_embeddings(taxonomy: Taxonomy) -> np.ndarray:
    """(K, 384) L2-normalised embeddings of each leaf's profile text, in ``leaves()`` order."""
    return get_encoder().encode([leaf.profile_text() for leaf in taxonomy.leaves()])


def example_embeddings(taxonomy: Taxonomy) -> np.ndarray:
    """(K, 384) embeddings of each leaf's example query (the difficulty node's example)."""
    return get_encoder().encode([leaf.path[-1].example for leaf in taxonomy.leaves()])


def leaf_similarity(
    taxonomy: Taxonomy, texts: Sequence[str], profile_weight: float = PROFILE_WEIGHT
) -> np.ndarray:
    """(n, K) cosine similarity of each query with each leaf (profile and example blended)."""
    if isinstance(texts, str):
        raise TypeError("pass a list of query texts, not a single string")
    if not 0.0 <= profile_weight <= 1.0:
        raise ValueError(f"profile_weight must be in [0, 1], got {profile_weight}")
    queries = get_encoder().encode(list(texts))
    if len(queries) == 0:
        return np.zeros((0, len(taxonomy.leaves())))
    by_profile = queries @ leaf_embeddings(taxonomy).T
    by_example = queries @ example_embeddings(taxonomy).T
    return (profile_weight * by_profile + (1.0 - profile_weight) * by_example).astype(float)


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
