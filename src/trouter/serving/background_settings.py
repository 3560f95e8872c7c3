"""Settings, the daily budget's syntax and the Prometheus counters of background labelling.

Kept apart from :mod:`trouter.serving.background` so that the CLI can check ``--label-budget-usd``
and build the settings without importing the labeller.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter


@dataclass
class BackgroundSettings:
    judge: str
    budget_usd_per_day: float
    judge_rate: float = 0.0
    #: label priority a query needs (``label_priority``: 3 a model short of labels, 2 a cell,
    #: else twice the chance that a rival beats the served model)
    threshold: float = 1.0
    #: labels per 1,000 routed queries at most (None: only the USD budget caps them)
    label_rate: float | None = None
    max_concurrency: int = 4
    max_queue: int = 256
    judge_max_tokens: int = 16


def parse_daily_budget(text: str) -> float:
    """``5/day`` or ``5`` -> 5.0 USD per UTC day."""
    head, sep, tail = str(text).strip().partition("/")
    try:
        value = float(head.strip().lstrip("$"))
    except ValueError:
        value = -1.0
    if value < 0 or value != value or (sep and tail.strip() not in ("day", "d")):
        raise ValueError(f"label budget {text!r} is not USD per day, e.g. 5/day")
    return value


class BackgroundMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        r = registry or CollectorRegistry()
        self.calls = Counter(
            "trouter_background_calls",
            "Background upstream calls by kind (answer, judge) and outcome (ok, error, "
            "unparsed: a judge reply without a readable verdict).",
            ["kind", "outcome"],
            registry=r,
        )
        self.spend = Counter(
            "trouter_background_spend_usd",
            "USD spent by background labelling and judging (apart from served spend).",
            registry=r,
        )
        self.jobs = Counter(
            "trouter_background_jobs",
            "Background jobs by kind (label, judge) and outcome (done, failed, dropped: the "
            "queue was full, over_budget: the day's budget was spent).",
            ["kind", "outcome"],
            registry=r,
        )
