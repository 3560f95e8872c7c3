"""The ``--max-cost`` ceiling of a labelling run: spend close to it, never past it.

Two reservations, both against ``limit``:

- **Questions** are admitted with their *expected* cost (every model's answer and verdict,
  answers as long as that model's mean so far). A question that does not fit waits until
  questions in flight finish, and is refused only when none is left in flight: the run
  does not start work it expects not to finish, and does not stop while money is unspent.
- **Calls** are started with their *worst-case* cost (prompt tokens with a margin for
  tokenizer differences, plus the full ``max_tokens`` of output). A call that does not fit
  waits for calls in flight to settle and is refused only when nothing is in flight, so
  the sum of what the calls can cost never passes the ceiling.

What is left unspent at the stop is less than one question's expected cost or one call's
worst case, whichever stopped the run.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

#: Prompt tokens are counted with LiteLLM's tokenizer, which may differ from the server's;
#: the worst case assumes the server counts this much more.
PROMPT_MARGIN = 1.25


class BudgetStop(Exception):
    """The next question or call would take spending past the ceiling."""


@dataclass
class Ticket:
    """One admitted question: its expected cost and what its calls have cost so far."""

    expected: float
    spent: float = 0.0

    @property
    def outstanding(self) -> float:
        return max(0.0, self.expected - self.spent)


class CostCeiling:
    """Admission of questions and calls under ``limit`` USD (None: no ceiling)."""

    def __init__(self, limit: float | None) -> None:
        self.limit = limit
        self.spent = 0.0
        self.calls_reserved = 0.0
        self.calls_in_flight = 0
        self.tickets: list[Ticket] = []
        self.stopped = False
        self._changed: asyncio.Condition | None = None

    @property
    def _condition(self) -> asyncio.Condition:
        if self._changed is None:  # created inside the run's event loop
            self._changed = asyncio.Condition()
        return self._changed

    async def admit(self, expected: float) -> Ticket:
        """A ticket for a question expected to cost ``expected``; BudgetStop if it never fits."""
        ticket = Ticket(expected)
        if self.limit is None:
            return ticket
        async with self._condition:
            while True:
                if self.stopped:
                    raise BudgetStop
                committed = sum(t.outstanding for t in self.tickets)
                if self.spent + committed + expected <= self.limit:
                    self.tickets.append(ticket)
                    return ticket
                if not self.tickets and not self.calls_in_flight:
                    self.stopped = True
                    self._condition.notify_all()
                    raise BudgetStop
                await self._condition.wait()

    async def release(self, ticket: Ticket) -> None:
        """The question is finished (or abandoned): its remaining expectation is freed."""
        if self.limit is None:
            return
        async with self._condition:
            if ticket in self.tickets:
                self.tickets.remove(ticket)
            self._condition.notify_all()

    async def start_call(self, worst: float) -> None:
        """Reserve a call's worst-case cost; waits for room, BudgetStop when none will come."""
        if self.limit is None:
            return
        async with self._condition:
            while True:
                if self.stopped:
                    raise BudgetStop
                if self.spent + self.calls_reserved + worst <= self.limit:
                    self.calls_reserved += worst
                    self.calls_in_flight += 1
                    return
                if not self.calls_in_flight:
                    self.stopped = True
                    self._condition.notify_all()
                    raise BudgetStop
                await self._condition.wait()

    async def end_call(self, worst: float, actual: float, ticket: Ticket | None) -> None:
        """Replace a call's reservation by what it cost (0 if it failed before answering)."""
        if self.limit is None:
            self.spent += actual
            return
        async with self._condition:
            self.calls_reserved -= worst
            self.calls_in_flight -= 1
            self.spent += actual
            if ticket is not None:
                ticket.spent += actual
            self._condition.notify_all()
