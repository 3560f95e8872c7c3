"""Spending and progress bookkeeping shared by the taxonomy builder and QA synthesis.

Synthesis runs make hundreds to thousands of generator calls, so a user needs a running
dollar total and a hard ceiling. :class:`CostMeter` counts every completion (cached ones
cost nothing) and raises :class:`BudgetExceededError` *before* a call once the ceiling is
reached; work already written (checkpoints, JSONL rows) stays, so a rerun resumes.
Concurrent calls that were already in flight may overshoot the ceiling by their own cost.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


class BudgetExceededError(RuntimeError):
    """The ``max_cost_usd`` ceiling was reached; the run stopped before the next call."""


@dataclass
class CostMeter:
    """Running totals of generator calls; ``max_cost_usd=None`` means no ceiling."""

    max_cost_usd: float | None = None
    spent_usd: float = 0.0
    calls: int = 0
    cached_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    unpriced_calls: int = 0
    on_update: Callable[[CostMeter], None] | None = field(default=None, repr=False)

    def check(self) -> None:
        """Raise if the ceiling is reached; called before every LLM call."""
        if self.max_cost_usd is not None and self.spent_usd >= self.max_cost_usd:
            raise BudgetExceededError(
                f"cost ceiling reached: spent ${self.spent_usd:.4f} of the allowed "
                f"${self.max_cost_usd:.4f} in {self.calls} calls; finished work is saved, "
                "rerun with a higher --max-cost to continue"
            )

    def add(self, completion: Any) -> None:
        """Record one completion (an ``trouter.llm`` Completion or anything shaped like it)."""
        self.calls += 1
        if getattr(completion, "cached", False):
            self.cached_calls += 1
        self.input_tokens += int(getattr(completion, "input_tokens", 0) or 0)
        self.output_tokens += int(getattr(completion, "output_tokens", 0) or 0)
        cost = getattr(completion, "cost_usd", None)
        if cost is None:
            self.unpriced_calls += 1
        elif not getattr(completion, "cached", False):
            self.spent_usd += float(cost)
        if self.on_update is not None:
            self.on_update(self)

    def summary(self) -> str:
        text = (
            f"{self.calls} calls ({self.cached_calls} from cache), "
            f"{self.input_tokens} input + {self.output_tokens} output tokens, "
            f"${self.spent_usd:.4f}"
        )
        if self.unpriced_calls:
            text += f" ({self.unpriced_calls} calls without a price)"
        return text


class CallCounter:
    """Counts one job's calls while charging a shared meter (jobs run concurrently)."""

    def __init__(self, shared: CostMeter) -> None:
        self.shared = shared
        self.calls = 0

    def check(self) -> None:
        self.shared.check()

    def add(self, completion: Any) -> None:
        self.calls += 1
        self.shared.add(completion)


class Progress(Protocol):
    """Where long synthesis steps report what they are doing (the CLI draws bars)."""

    def stage(self, name: str, total: int) -> None:
        """A new stage with ``total`` units of work begins."""

    def advance(self, name: str, amount: int = 1) -> None:
        """``amount`` units of stage ``name`` are done."""

    def note(self, message: str) -> None:
        """A warning or remark the user should see (truncated sets, given-up leaves)."""


class SilentProgress:
    """A :class:`Progress` that keeps notes in a list and draws nothing (library default)."""

    def __init__(self) -> None:
        self.notes: list[str] = []

    def stage(self, name: str, total: int) -> None:
        pass

    def advance(self, name: str, amount: int = 1) -> None:
        pass

    def note(self, message: str) -> None:
        self.notes.append(message)
