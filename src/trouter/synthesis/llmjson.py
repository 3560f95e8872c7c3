"""Asking an LLM for JSON and getting usable JSON back.

Generator LLMs wrap JSON in prose or code fences, truncate it, or return a shape that is
almost right. Every synthesis step therefore goes through :func:`ask_json`: it extracts the
first JSON value from the reply, hands it to a step-specific ``parse`` function, and on any
failure asks again with the error fed back, so the model can correct itself; after the last
attempt it raises :class:`MalformedOutputError` naming the step (level and node) that failed.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from typing import Any, TypeVar

from trouter.synthesis.budget import CallCounter, CostMeter

T = TypeVar("T")

#: How many times one step is asked before its output is reported as malformed.
DEFAULT_ATTEMPTS = 3


class MalformedOutputError(RuntimeError):
    """The LLM kept returning output that could not be parsed for one synthesis step."""


class JSONExtractError(ValueError):
    """No JSON object or array could be found in a reply."""


def extract_json(text: str) -> Any:
    """The first complete JSON object or array in ``text`` (code fences and prose ignored).

    Tries every ``{`` / ``[`` from left to right with a real JSON decoder, so braces inside
    surrounding prose do not confuse it; a reply that is itself valid JSON is returned as is.
    """
    stripped = text.strip()
    try:
        value = json.loads(stripped)
        if isinstance(value, dict | list):
            return value
    except json.JSONDecodeError:
        pass
    decoder = json.JSONDecoder()
    first_error: json.JSONDecodeError | None = None
    for index, char in enumerate(text):
        if char not in "{[":
            continue
        try:
            value, _ = decoder.raw_decode(text, index)
        except json.JSONDecodeError as err:
            first_error = first_error or err
            continue
        if isinstance(value, dict | list):
            return value
    if first_error is not None:
        raise JSONExtractError(
            f"the JSON in the reply is not valid ({first_error.msg} at character "
            f"{first_error.pos}); it may be truncated"
        )
    raise JSONExtractError("the reply contains no JSON object or array")


def json_schema_format(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI-style ``response_format`` asking for output that matches ``schema``."""
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}


#: Pool names whose server rejected a ``response_format`` once; they are asked in plain text.
_SCHEMA_REJECTED: set[str] = set()


def schema_supported(endpoint: Any) -> bool:
    """Whether to send a JSON-schema ``response_format`` to this endpoint.

    Only where LiteLLM knows the model supports structured output: a server that does not
    would either reject the request or ignore it, and the text extraction copes anyway.
    """
    if getattr(endpoint, "name", None) in _SCHEMA_REJECTED:
        return False
    try:
        import litellm

        return bool(litellm.supports_response_schema(model=endpoint.litellm_model))
    except Exception:  # unknown model or provider: treat as unsupported
        return False


async def ask_json(
    client: Any,
    endpoint: Any,
    messages: list[dict[str, str]],
    *,
    parse: Callable[[Any], T],
    what: str,
    meter: CostMeter | CallCounter,
    temperature: float = 0.0,
    max_tokens: int = 2048,
    schema: tuple[str, dict[str, Any]] | None = None,
    attempts: int = DEFAULT_ATTEMPTS,
) -> T:
    """Call the LLM until ``parse(extract_json(reply))`` succeeds; give up after ``attempts``
    unusable fresh replies (replies replayed from the cache do not count).

    ``parse`` (or the awaitable it returns) raises ``ValueError`` (or ``KeyError``/
    ``TypeError``) with a message written for the model: it is sent back verbatim as the
    reason the reply was rejected. ``schema`` (name, JSON schema) becomes a
    ``response_format`` where the endpoint supports one; a server that rejects it (HTTP 400)
    is asked again without, once and for the whole run.
    """
    conversation = list(messages)
    last_error = ""
    last_text = ""
    failures = 0  # fresh (not cached) unusable replies; cached ones were paid for earlier
    attempt = 0
    while failures < attempts and attempt < 3 * attempts:
        attempt += 1
        meter.check()
        completion = await _complete(
            client, endpoint, conversation, temperature, max_tokens, schema
        )
        meter.add(completion)
        last_text = completion.text or ""
        try:
            parsed = parse(extract_json(last_text))
            # an async parse (one that runs blocking checks off the event loop) is awaited
            return await parsed if inspect.isawaitable(parsed) else parsed
        except (ValueError, KeyError, TypeError) as err:
            last_error = str(err) or type(err).__name__
        failures += not getattr(completion, "cached", False)
        # the attempt number keeps every retry distinct, so a response cache replays an
        # earlier run's failed chain for free and then reaches a fresh call
        conversation = [
            *messages,
            {"role": "assistant", "content": last_text},
            {
                "role": "user",
                "content": (
                    f"Your reply could not be used (attempt {attempt}): {last_error}. Reply "
                    "again with only the corrected JSON, following the requested format "
                    "exactly."
                ),
            },
        ]
    preview = " ".join(last_text.split())[:200]
    raise MalformedOutputError(
        f"{what}: model {getattr(endpoint, 'name', endpoint)!r} returned unusable output "
        f"{failures} times; last error: {last_error}; last reply began: {preview!r}"
    )


async def _complete(client, endpoint, messages, temperature, max_tokens, schema) -> Any:
    response_format = None
    if schema is not None and schema_supported(endpoint):
        response_format = json_schema_format(*schema)
    try:
        return await client.acomplete(
            endpoint,
            messages,
            temperature=temperature,
            max_tokens=max_tokens,
            response_format=response_format,
        )
    except Exception as err:
        if response_format is None or getattr(err, "kind", None) != "bad_request":
            raise
        _SCHEMA_REJECTED.add(endpoint.name)
        return await client.acomplete(
            endpoint, messages, temperature=temperature, max_tokens=max_tokens
        )
