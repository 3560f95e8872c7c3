"""Dry-run estimates of how many generator calls (and dollars) a synthesis run needs.

Used by ``--dry-run`` before a user commits to hundreds of paid calls. The figures are
planning numbers, not promises: the number of refinement rounds depends on when the LLM
stops changing a set, and token counts are rough per-call allowances (prompt size grows
with the node sets quoted back). Minimum and maximum bound the call count exactly; the
expected figure assumes one accepted revision per node set and a few QA retries.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

#: Rough token allowances per call: fixed instructions and one task-profile node.
PROMPT_TOKENS = 350
NODE_TOKENS = 70
QA_PROMPT_TOKENS = 900
QA_PAIR_TOKENS = 180

PriceFn = Callable[[int, int], float | None]  # (input tokens, output tokens) -> USD


@dataclass
class Estimate:
    what: str
    calls_min: int
    calls_expected: int
    calls_max: int
    input_tokens: int  # expected
    output_tokens: int  # expected
    cost_usd: float | None  # expected; None when the model has no price
    cost_usd_max: float | None

    def lines(self) -> list[str]:
        cost = "unknown (no price for this model)"
        if self.cost_usd is not None:
            cost = f"~${self.cost_usd:.2f} expected, at most ~${self.cost_usd_max:.2f}"
        return [
            f"{self.what}: {self.calls_min}-{self.calls_max} calls, ~{self.calls_expected} "
            f"expected",
            f"  ~{self.input_tokens:,} input + ~{self.output_tokens:,} output tokens; cost {cost}",
        ]


def _loop_tokens(cap: int, rounds: int) -> tuple[int, int, int]:
    """(calls, input tokens, output tokens) of one loop running ``rounds`` rounds."""
    set_tokens = NODE_TOKENS * cap
    calls = 1 + 2 * rounds
    tokens_in = PROMPT_TOKENS + rounds * (2 * PROMPT_TOKENS + 3 * set_tokens)
    tokens_out = set_tokens + rounds * (set_tokens + 150)
    return calls, tokens_in, tokens_out


def estimate_taxonomy(
    *,
    n_domains: int,
    max_subcategories: int,
    max_difficulties: int,
    include_preferences: bool,
    max_preferences: int = 6,
    max_rounds_upper: int = 10,
    max_rounds_lower: int = 5,
    price: PriceFn | None = None,
) -> Estimate:
    """Calls for a taxonomy whose sets are as large as the caps allow."""
    loops = [(1, n_domains, max_rounds_upper), (n_domains, max_subcategories, max_rounds_upper)]
    n_pairs = n_domains * max_subcategories
    loops.append((n_pairs, max_difficulties, max_rounds_lower))
    if include_preferences:
        loops.append((n_pairs, max_preferences, max_rounds_lower))
    calls_min = sum(count * 3 for count, _, _ in loops)  # generate + 2 identical revisions
    expected = [(count, *_loop_tokens(cap, min(3, rounds))) for count, cap, rounds in loops]
    worst = [(count, *_loop_tokens(cap, rounds)) for count, cap, rounds in loops]
    return _estimate("taxonomy", calls_min, expected, worst, price)


def estimate_qa(
    *, n_leaves: int, per_leaf: int, per_call: int, max_calls_per_leaf: int, price=None
) -> Estimate:
    """Calls for ``n_leaves`` leaves; expected assumes a quarter of calls lost to repeats."""
    needed = math.ceil(per_leaf / per_call)
    expected_calls = min(max_calls_per_leaf, math.ceil(needed * 1.25))
    tokens_in, tokens_out = QA_PROMPT_TOKENS, QA_PAIR_TOKENS * per_call

    def rows(calls: int) -> list[tuple[int, int, int, int]]:
        return [(n_leaves, calls, tokens_in * calls, tokens_out * calls)]

    expected, worst = rows(expected_calls), rows(max_calls_per_leaf)
    return _estimate("QA synthesis", n_leaves * needed, expected, worst, price)


def _estimate(what, calls_min, expected, worst, price: PriceFn | None) -> Estimate:
    def total(rows):
        calls = sum(n * c for n, c, _, _ in rows)
        return calls, sum(n * i for n, _, i, _ in rows), sum(n * o for n, _, _, o in rows)

    calls, tokens_in, tokens_out = total(expected)
    calls_max, worst_in, worst_out = total(worst)
    cost = price(tokens_in, tokens_out) if price else None
    cost_max = price(worst_in, worst_out) if price else None
    return Estimate(what, calls_min, calls, calls_max, tokens_in, tokens_out, cost, cost_max)
