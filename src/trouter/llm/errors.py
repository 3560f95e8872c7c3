"""What a failed LLM call means: the error type, and which failures are worth retrying.

- 429, 5xx, timeouts, dropped connections and unparseable response bodies are transient:
  retried by :class:`trouter.llm.client.LLMClient` with backoff (``Retry-After`` honoured).
- Other 4xx (bad request, auth, unknown model) are the caller's problem: raised at once.
"""

from __future__ import annotations

import asyncio
from typing import Any

import litellm


class LLMError(Exception):
    """A call that failed for good (after retries, or at once for non-transient errors).

    ``kind`` is one of timeout, connection, rate_limit, server, malformed, auth,
    bad_request, not_found, missing_key, other.
    """

    def __init__(
        self, model: str, kind: str, message: str, status: int | None = None, attempts: int = 1
    ) -> None:
        self.model, self.kind, self.message = model, kind, message
        self.status, self.attempts = status, attempts
        super().__init__(str(self))

    def __str__(self) -> str:
        status = f" (HTTP {self.status})" if self.status else ""
        tries = f" after {self.attempts} attempts" if self.attempts > 1 else ""
        return f"{self.model}: {self.kind}{status}{tries}: {self.message}"


def classify(err: Exception) -> tuple[str, int | None, bool]:
    """(kind, HTTP status, retryable) for an exception raised by ``litellm.acompletion``."""
    status = getattr(err, "status_code", None)
    status = status if isinstance(status, int) else None
    text = str(err)
    if isinstance(err, litellm.Timeout | asyncio.TimeoutError | TimeoutError):
        return "timeout", status, True
    if isinstance(err, litellm.RateLimitError) or status == 429:
        return "rate_limit", 429, True
    if "Connection error" in text or isinstance(err, litellm.APIConnectionError):
        return "connection", status, True
    if isinstance(err, litellm.AuthenticationError | litellm.PermissionDeniedError):
        return "auth", status, False
    if isinstance(err, litellm.NotFoundError):
        return "not_found", status, False
    if isinstance(err, litellm.BadRequestError):
        return "bad_request", status, False
    if status is not None and status >= 500:
        kind = "malformed" if ("Expecting value" in text or "JSONDecodeError" in text) else "server"
        return kind, status, True
    if status is not None and 400 <= status < 500:
        return "bad_request", status, False
    if isinstance(err, ValueError | KeyError | TypeError | AttributeError):
        return "malformed", status, True  # an unusable response body
    return "other", status, False


def retry_after(err: Exception) -> float | None:
    """Seconds from a ``Retry-After`` header on the error's response, if any."""
    headers: Any = getattr(err, "litellm_response_headers", None)
    if headers is None:
        response = getattr(err, "response", None)
        headers = getattr(response, "headers", None)
    if headers is None:
        return None
    try:
        value = headers.get("retry-after") or headers.get("Retry-After")
        return max(0.0, float(value)) if value is not None else None
    except (TypeError, ValueError):
        return None  # an HTTP-date form; fall back to our own backoff


def scrub(text: str, secret: str | None) -> str:
    if secret and len(secret) >= 4:
        text = text.replace(secret, "***")
    return " ".join(text.split())[:500]
