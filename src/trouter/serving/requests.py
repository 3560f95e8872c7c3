"""Reading and checking one chat request before it reaches routing or an upstream.

Everything a client can get wrong is answered here with a 400 (or 413) in OpenAI's error
shape, never with a 5xx: bodies over the size limit, invalid JSON, NaN or infinite numbers
(which no upstream accepts, so forwarding them only burns attempts), JSON nested deeper than
any chat request needs (which would otherwise exhaust the interpreter's recursion limit),
content parts of the wrong shape, and text that is not Unicode (lone surrogates). A body
that is not sent as ``application/json`` gets 415 (a browser can send ``text/plain``
cross-site without asking first), and one that does not arrive within the deadline 408.

Fields the proxy does not know (``reasoning_effort``, ``store``, ``metadata``, and whatever
OpenAI adds next) are kept and forwarded to the upstream as sent.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Literal

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from trouter.encoders import unicode_problem

#: The encoder reads at most 256 tokens; this bounds the tokeniser's work on huge prompts.
MAX_QUERY_CHARS = 4000
#: Chat requests (tools with JSON schemas included) nest a few levels; this is far beyond.
MAX_JSON_DEPTH = 64


class ProxyError(Exception):
    """An error answered with an OpenAI-style body (and headers, e.g. ``Retry-After``)."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code = status, message, type_, code
        self.headers = headers

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.type, "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def invalid(message: str, code: str = "invalid_request") -> ProxyError:
    return ProxyError(400, message, "invalid_request_error", code)


#: Content part types of OpenAI's chat API, with the field each must carry and its shape.
PART_FIELDS: dict[str, tuple[str, type]] = {
    "text": ("text", str),
    "image_url": ("image_url", dict),
    "input_audio": ("input_audio", dict),
    "file": ("file", dict),
    "refusal": ("refusal", str),
}


class Message(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)  # name, tool_calls... pass
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None

    @field_validator("content")
    @classmethod
    def _known_parts(cls, content: str | list[dict[str, Any]] | None):
        if isinstance(content, list):
            for i, part in enumerate(content):
                kind = part.get("type")
                if kind not in PART_FIELDS:
                    raise ValueError(
                        f"content part {i} has type {kind!r}; expected one of "
                        f"{', '.join(PART_FIELDS)}"
                    )
                field, shape = PART_FIELDS[kind]
                if not isinstance(part.get(field), shape):
                    raise ValueError(
                        f"content part {i} is of type {kind!r} but its {field!r} is not a "
                        f"{'string' if shape is str else 'JSON object'}"
                    )
                if kind == "image_url" and not isinstance(part[field].get("url"), str):
                    raise ValueError(f"content part {i}: image_url.url must be a string")
        return content


class ChatRequest(BaseModel):
    """The OpenAI chat request fields the proxy checks; other fields are kept and forwarded."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    model: str
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    n: int | None = Field(default=None, ge=1, le=128)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    seed: int | None = None
    user: str | None = None
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None


#: Fields the proxy itself acts on; every other (validated) field goes to the upstream.
OWN_FIELDS = frozenset({"model", "messages", "stream", "stream_options"})


def forward_params(raw: dict[str, Any]) -> dict[str, Any]:
    """The sampling/tool parameters of a request validated by :func:`parse_chat`, as sent."""
    return {k: v for k, v in raw.items() if k not in OWN_FIELDS and v is not None}


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a valid JSON number")


def _check_tree(value: Any) -> None:
    """Refuse nesting deeper than :data:`MAX_JSON_DEPTH` and strings that are not Unicode.

    Iterative, so a hostile body cannot exhaust the recursion limit here either.
    """
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            if (problem := unicode_problem(node)) is not None:
                raise invalid(f"request text {problem}", "invalid_text")
            continue
        if not isinstance(node, dict | list):
            continue
        if depth > MAX_JSON_DEPTH:
            raise invalid(
                f"request JSON is nested more than {MAX_JSON_DEPTH} levels deep", "too_deep"
            )
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, child in items:
            if isinstance(key, str):
                stack.append((key, depth))
            stack.append((child, depth + 1))


def check_json_media_type(content_type: str | None) -> None:
    """415 unless the body is declared as JSON (``application/json``, any parameters)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media != "application/json":
        raise ProxyError(
            415,
            f"the body must be sent as Content-Type: application/json, not {media or 'none'!r}",
            "invalid_request_error",
            "unsupported_media_type",
        )


async def read_json(request: Request, limit: int, timeout_s: float | None = None) -> Any:
    """The request body as JSON, checked by :func:`_check_tree`; 413 over ``limit`` bytes,
    408 when the whole body has not arrived within ``timeout_s`` seconds."""
    declared = request.headers.get("content-length")
    too_big = ProxyError(
        413,
        f"request body exceeds the proxy's limit of {limit} bytes",
        "invalid_request_error",
        "request_too_large",
    )
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_big
    body = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                body.extend(chunk)
                if len(body) > limit:
                    raise too_big
    except TimeoutError:
        raise ProxyError(
            408,
            f"the request body did not arrive within {timeout_s:g} s",
            "invalid_request_error",
            "request_timeout",
        ) from None
    try:
        raw = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as err:  # JSONDecodeError is a ValueError
        raise invalid(f"request body is not valid JSON: {err}", "invalid_json") from err
    except RecursionError as err:
        raise invalid(
            f"request JSON is nested more than {MAX_JSON_DEPTH} levels deep", "too_deep"
        ) from err
    _check_tree(raw)
    return raw


def validation_message(err: ValidationError) -> str:
    parts = []
    for e in err.errors()[:5]:
        where = ".".join(str(p) for p in e["loc"]) or "body"
        parts.append(f"{where}: {e['msg']}")
    return "invalid chat request: " + "; ".join(parts)


def parse_chat(raw: Any) -> ChatRequest:
    try:
        return ChatRequest.model_validate(raw)
    except ValidationError as err:
        raise invalid(validation_message(err)) from err
