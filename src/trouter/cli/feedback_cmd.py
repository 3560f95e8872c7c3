"""``trouter feedback import FILE.jsonl``: offline scores of logged requests into the store."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import typer

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


def register(app: typer.Typer) -> None:
    app.add_typer(feedback_app, name="feedback")
