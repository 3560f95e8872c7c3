"""``trouter feedback import FILE.jsonl``: offline scores of logged requests into the store."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import typer
from pydantic import BaseModel, ConfigDict, Field, field_validator

from trouter.config import MalformedDataError

feedback_app = typer.Typer(
    help="Feedback on routed requests (the proxy's POST /v1/feedback, offline).",
    no_args_is_help=True,
)


@feedback_app.command("import")
def import_feedback(
    file: Path = typer.Argument(..., help="JSONL: one {request_id, score|thumbs|rating} a line."),
    store: str = typer.Option(
        ..., "--store", help="The proxy's store: sqlite:///path.db or postgresql://..."
    ),
    source: str = typer.Option(
        "grader", help="Source of lines that name none: user, judge or grader."
    ),
) -> None:
    """Add scores from an offline evaluation, as POST /v1/feedback would.

    Each line holds request_id (the x-trouter-request-id of the proxy's reply) and one of
    score (0..1), thumbs (up|down) or rating (1..5), optionally source and idempotency_key.
    Every line is checked before any is stored; a replayed line is not counted twice.
    """
    from trouter.data.jsonl import iter_json_objects
    from trouter.serving.feedback import parse_feedback
    from trouter.serving.requests import ProxyError
    from trouter.store import SOURCES, Store

    if source not in SOURCES:
        raise MalformedDataError(f"--source must be one of {', '.join(SOURCES)}, not {source!r}")
    events = []
    for where, _, row in iter_json_objects(file):
        try:
            events.append(parse_feedback({"source": source, **row}))
        except ProxyError as err:
            raise MalformedDataError(f"{where}: {err.message}") from None
    opened = Store.open(store)
    try:
        outcome = Counter(opened.add_feedback(event) for event in events)
    finally:
        opened.close()
    parts = [f"{outcome[s]} {s}" for s in ("accepted", "duplicate", "unknown", "expired")]
    typer.echo(f"{len(events)} feedback lines from {file}: {', '.join(parts)}")


class LabelLine(BaseModel):
    """One line of ``trouter feedback import-labels``."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    request_id: str = Field(min_length=1, max_length=128)
    scores: dict[str, float] = Field(min_length=1)
    costs: dict[str, float] | None = None
    judge: str | None = Field(default=None, max_length=200)
    spend_usd: float = Field(default=0.0, ge=0)
    id: str | None = Field(default=None, min_length=1, max_length=200)

    @field_validator("scores")
    @classmethod
    def _in_unit_range(cls, scores: dict[str, float]) -> dict[str, float]:
        bad = {m: v for m, v in scores.items() if not 0 <= v <= 1}
        if bad:
            raise ValueError(f"scores must be in [0, 1], not {bad}")
        return scores


@feedback_app.command("import-labels")
def import_labels(
    file: Path = typer.Argument(
        ..., help="JSONL: one {request_id, scores: {model: score}} a line."
    ),
    store: str = typer.Option(
        ..., "--store", help="The proxy's store: sqlite:///path.db or postgresql://..."
    ),
) -> None:
    """Add full-information labels: several pool models scored on a logged request.

    Each line holds request_id, scores (pool model -> score in [0, 1]) and optionally
    costs (model -> normalised cost), judge (who scored), spend_usd (what the labelling
    calls cost) and id (idempotency key; default request_id + judge). An online router
    serving from the store learns from them at its next fold. Every line is checked first.
    """
    from pydantic import ValidationError

    from trouter.data.jsonl import iter_json_objects
    from trouter.serving.requests import validation_message
    from trouter.store import Store

    labels = []
    for where, _, row in iter_json_objects(file):
        try:
            labels.append(LabelLine.model_validate(row))
        except ValidationError as err:
            message = validation_message(err).replace("chat request", "label")
            raise MalformedDataError(f"{where}: {message}") from None
    opened = Store.open(store)
    outcome: Counter[str] = Counter()
    try:
        for label in labels:
            decision = opened.decision(label.request_id)
            if decision is None or decision.features is None:
                outcome["unknown" if decision is None else "expired"] += 1
                continue
            key = label.id or f"{label.request_id}:{label.judge or 'import'}"
            fresh = opened.add_label(key, label.scores, label.costs, label.request_id,
                                     label.judge, label.spend_usd)  # fmt: skip
            outcome["accepted" if fresh else "duplicate"] += 1
    finally:
        opened.close()
    parts = [f"{outcome[s]} {s}" for s in ("accepted", "duplicate", "unknown", "expired")]
    typer.echo(f"{len(labels)} label lines from {file}: {', '.join(parts)}")


def register(app: typer.Typer) -> None:
    app.add_typer(feedback_app, name="feedback")
