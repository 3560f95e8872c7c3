"""``POST /v1/feedback``: how an answer went, keyed by the request id the proxy returned.

The body names the request (``request_id``, the ``x-trouter-request-id`` of the reply) and
one score: ``score`` in [0, 1], ``thumbs`` (``up`` = 1, ``down`` = 0) or ``rating`` 1..5
(mapped to 0, 0.25, ..., 1). ``source`` says who scored (``user``, ``judge``, ``grader``;
default ``user``) and ``idempotency_key`` (or the ``Idempotency-Key`` header) makes a
retried post count once; without a key, one score per request and source counts.

Answers: 200 with ``status`` ``accepted`` or ``duplicate`` (a replay, not counted again);
404 for an id never logged; 410 for one past the retention TTL; 503 (with Retry-After)
while the store cannot be reached. Errors use OpenAI's body shape.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from trouter.serving.requests import ProxyError, invalid, read_json, validation_message
from trouter.store import Feedback, StoreUnavailable

FEEDBACK_PATH = "/v1/feedback"
IDEMPOTENCY_HEADER = "idempotency-key"
#: How long a post waits for a decision still in the log's queue before answering 404.
PENDING_WAIT_S = 2.0
MAX_BODY_BYTES = 16_384


class FeedbackBody(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    request_id: str = Field(min_length=1, max_length=128)
    score: float | None = Field(default=None, ge=0, le=1)
    thumbs: Literal["up", "down"] | None = None
    rating: int | None = Field(default=None, ge=1, le=5)
    source: Literal["user", "judge", "grader"] = "user"
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)

    @model_validator(mode="after")
    def _one_score(self) -> FeedbackBody:
        given = [name for name in ("score", "thumbs", "rating") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of score (0..1), thumbs (up|down) or rating (1..5), "
                f"not {', '.join(given) or 'none'}"
            )
        return self

    @property
    def value(self) -> float:
        """The score in [0, 1]."""
        if self.score is not None:
            return float(self.score)
        if self.thumbs is not None:
            return 1.0 if self.thumbs == "up" else 0.0
        assert self.rating is not None
        return (self.rating - 1) / 4.0


def parse_feedback(raw: Any, key_header: str | None = None) -> Feedback:
    """A :class:`Feedback` from a request body (400 with the reasons otherwise)."""
    try:
        body = FeedbackBody.model_validate(raw)
    except ValidationError as err:
        raise invalid(validation_message(err).replace("chat request", "feedback")) from err
    key = body.idempotency_key or key_header
    return Feedback(body.request_id, body.value, body.source, key)


def feedback_router(loop) -> APIRouter:
    """The route, answered by a :class:`~trouter.serving.learning.FeedbackLoop`."""
    router = APIRouter()

    @router.post(FEEDBACK_PATH)
    async def post_feedback(request: Request) -> dict[str, Any]:
        raw = await read_json(request, MAX_BODY_BYTES, 10.0)
        feedback = parse_feedback(raw, request.headers.get(IDEMPOTENCY_HEADER))
        try:
            status = await asyncio.to_thread(loop.add_feedback, feedback, PENDING_WAIT_S)
        except StoreUnavailable as err:
            raise ProxyError(
                503,
                f"the feedback store cannot be reached; retry later ({err})",
                "server_error",
                "store_unavailable",
                {"retry-after": "5"},
            ) from err
        if status == "unknown":
            raise ProxyError(
                404,
                f"no routed request with id {feedback.request_id!r} is logged (the id is the "
                "x-trouter-request-id header of the proxy's reply)",
                "invalid_request_error",
                "request_not_found",
            )
        if status == "expired":
            raise ProxyError(
                410,
                f"request {feedback.request_id!r} is past the store's retention; its feedback "
                "is no longer taken",
                "invalid_request_error",
                "request_expired",
            )
        return {
            "object": "feedback",
            "request_id": feedback.request_id,
            "score": feedback.score,
            "source": feedback.source,
            "status": status,
        }

    return router
