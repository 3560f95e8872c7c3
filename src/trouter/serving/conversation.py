"""What a chat request asks for, read from the whole conversation.

* :func:`routing_text`: the text the router sees. The last user turn states the task; a short
  follow-up ("ok thanks", "and in Rust?") does not, so earlier user turns are added after it,
  newest first, until the text says enough. Without any user text, the developer/system
  prompt is what there is; with no text at all the caller uses the policy's default model.
* :func:`needs`: what the chosen model must be able to take (images, tools, a JSON schema,
  the prompt's length), checked against :mod:`trouter.serving.capabilities`.
* :class:`Sessions`: which model a conversation is on, so a tool-call loop (the client sends
  the tool's result back) is answered by the model that asked for the tool. The key is the
  ``x-trouter-session`` header, else a hash of the conversation's opening (its messages up to
  the first user turn). The store is bounded in entries and time (``cachetools.TTLCache``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from cachetools import TTLCache

from trouter.serving.ranking import tokens_of_chars
from trouter.serving.requests import MAX_QUERY_CHARS, Message

#: A last user turn shorter than this is a follow-up: earlier user turns are added to it.
FOLLOW_UP_CHARS = 80
#: Tokens an image part counts for in the prompt-length estimate (a 512 px tile at high
#: detail in OpenAI's accounting).
IMAGE_TOKENS = 765
SESSION_HEADER = "x-trouter-session"


def message_text(message: Message) -> str:
    content = message.content
    if isinstance(content, list):
        return "\n".join(part["text"] for part in content if part.get("type") == "text")
    return content or ""


def routing_text(messages: list[Message]) -> str | None:
    """The conversation's task as text for the router, or None when it has no text."""
    user_turns = [t for m in messages if m.role == "user" if (t := message_text(m)).strip()]
    if not user_turns:
        prompts = [message_text(m) for m in messages if m.role in ("developer", "system")]
        text = "\n".join(p for p in prompts if p.strip())
        return text[:MAX_QUERY_CHARS] if text.strip() else None
    parts = [user_turns[-1]]
    # The last *message* may hold no text (an image, a tool result): the last text is used.
    for earlier in reversed(user_turns[:-1]):
        if sum(map(len, parts)) >= FOLLOW_UP_CHARS:
            break
        parts.append(earlier)
    return "\n".join(parts)[:MAX_QUERY_CHARS]


@dataclass(frozen=True)
class Needs:
    """What a model must support to take a request."""

    vision: bool
    tools: bool
    json_schema: bool
    #: rough prompt size: characters / 4 plus :data:`IMAGE_TOKENS` per image
    input_tokens: int

    def describe(self) -> str:
        wants = [n for n, on in (("images", self.vision), ("tools", self.tools)) if on]
        if self.json_schema:
            wants.append("a JSON schema")
        wants.append(f"about {self.input_tokens} input tokens")
        return ", ".join(wants)


def needs(raw: dict[str, Any], messages: list[Message]) -> Needs:
    """What the request (validated by ``parse_chat``) requires of the model that takes it."""
    images = chars = 0
    tool_messages = False
    for message in messages:
        content = message.content
        if isinstance(content, str):
            chars += len(content)
        elif content:
            chars += len(message_text(message))
            images += sum(1 for part in content if part.get("type") == "image_url")
        if message.role in ("tool", "function"):
            tool_messages = True
        if calls := getattr(message, "tool_calls", None):
            chars += len(json.dumps(calls, ensure_ascii=False))
    tools = raw.get("tools") or raw.get("functions")
    if tools:
        chars += len(json.dumps(tools, ensure_ascii=False))
    response_format = raw.get("response_format")
    schema = isinstance(response_format, dict) and response_format.get("type") == "json_schema"
    return Needs(
        vision=images > 0,
        tools=bool(tools) or tool_messages,
        json_schema=schema,
        input_tokens=tokens_of_chars(chars) + images * IMAGE_TOKENS,
    )


def in_tool_loop(messages: list[Message]) -> bool:
    """True when, since the last user turn, the assistant called a tool (the loop is running)."""
    for message in reversed(messages):
        if message.role == "user":
            return False
        if message.role in ("tool", "function") or getattr(message, "tool_calls", None):
            return True
    return False


def opening_hash(raw_messages: list[dict[str, Any]]) -> str:
    """A hash of the conversation up to and including its first user turn."""
    opening = []
    for message in raw_messages:
        opening.append(message)
        if message.get("role") == "user":
            break
    canonical = json.dumps(opening, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


class Sessions:
    """conversation key -> the pool model that answered it last (bounded LRU with a TTL)."""

    def __init__(self, max_entries: int = 10_000, ttl_s: float = 3600.0) -> None:
        self._models: TTLCache[tuple, str] = TTLCache(max_entries, ttl_s)

    def __len__(self) -> int:
        return len(self._models)

    @staticmethod
    def key(client: str, header: str | None, raw_messages: list[dict[str, Any]]) -> tuple:
        """The conversation's key: the header, else the hash of its opening."""
        if header:
            return client, "h:" + header[:200]
        return client, "c:" + opening_hash(raw_messages)

    def get(self, key: tuple) -> str | None:
        return self._models.get(key)

    def remember(self, key: tuple, model: str) -> None:
        self._models[key] = model
