"""The one LLM client: LiteLLM calls with our retries, a concurrency limit, cost and a cache.

Labelling, taxonomy building and QA synthesis all call LLMs through :class:`LLMClient`, so
they share one policy for what a failure means:

- 429, 5xx, timeouts, dropped connections and unparseable response bodies are transient:
  retried with exponential backoff and jitter (a ``Retry-After`` header is honoured);
  other 4xx are raised at once (:mod:`trouter.llm.errors` classifies).
- LiteLLM's and the OpenAI SDK's own retries are switched off so these rules are the only ones.

Every completion reports tokens, latency and cost (explicit pool prices first, then LiteLLM's
price map; ``cost_usd=None`` with a ``cost_note`` when the model has no known price). Answers
are cached on disk (:mod:`trouter.llm.cache`), so an interrupted run resumes for free; a
cache hit is marked ``cached=True`` and costs 0; a cache that cannot be written (a full
disk) is a warning, never a lost answer. API keys are read from the environment per
call, passed to LiteLLM only, and scrubbed from error messages.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import litellm

from trouter.llm.cache import CompletionCache, cache_key
from trouter.llm.errors import LLMError, classify, retry_after, scrub
from trouter.llm.pool import MissingAPIKeyError, ModelEndpoint

litellm.suppress_debug_info = True
litellm.set_verbose = False
for _name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "httpx"):
    logging.getLogger(_name).setLevel(logging.ERROR)

log = logging.getLogger(__name__)

#: Longest wait between attempts, whatever the backoff or a Retry-After header says.
MAX_BACKOFF_S = 60.0

Messages = list[dict[str, Any]]
#: Rewrites an OpenAI ``response_format`` into the dialect an endpoint's server accepts.
ResponseFormatAdapter = Callable[[ModelEndpoint, dict[str, Any]], dict[str, Any]]

__all__ = ["Completion", "LLMCall", "LLMClient", "LLMError", "ClientStats"]


@dataclass(frozen=True)
class Completion:
    """One answer and its accounting. ``model`` is the pool name, not the LiteLLM name.

    ``cost_usd`` and ``latency_s`` are what this call spent now (0 for a cache hit);
    ``original_cost_usd`` and ``original_latency_s`` are what answering cost when the call
    was really made -- the figures a routing label needs, whether or not it came from cache.
    """

    text: str
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    latency_s: float
    model: str
    cached: bool = False
    attempts: int = 1
    cost_note: str | None = None
    original_cost_usd: float | None = None
    original_latency_s: float | None = None


@dataclass
class LLMCall:
    """One request for :meth:`LLMClient.amap`."""

    endpoint: ModelEndpoint
    messages: Messages
    temperature: float = 0.0
    max_tokens: int | None = None
    response_format: dict[str, Any] | None = None
    extra: dict[str, Any] | None = field(default=None)


@dataclass
class ClientStats:
    """Totals since the client was made (the CLI shows them)."""

    calls: int = 0
    cache_hits: int = 0
    http_attempts: int = 0
    failures: int = 0
    spent_usd: float = 0.0
    #: Answers paid for but not cached (the cache could not be written, e.g. a full disk).
    cache_write_failures: int = 0


def count_prompt_tokens(endpoint: ModelEndpoint, messages: Messages) -> int:
    """Prompt tokens by LiteLLM's tokenizer for the model (tiktoken's when it has none)."""
    return int(litellm.token_counter(model=endpoint.litellm_model, messages=messages))


def supports_response_schema(endpoint: ModelEndpoint) -> bool:
    """Whether LiteLLM knows the backend accepts a JSON-schema ``response_format``."""
    try:
        return bool(litellm.supports_response_schema(model=endpoint.litellm_model))
    except Exception:  # a model LiteLLM does not know: send plain text prompts
        return False


class LLMClient:
    """Calls pool models through LiteLLM; see the module docstring for the rules."""

    def __init__(
        self,
        cache_dir: str | Path | None = None,
        max_concurrency: int = 8,
        max_retries: int = 5,
        timeout_s: float = 60.0,
        backoff_base_s: float = 0.5,
        use_cache: bool = True,
        response_format_adapter: ResponseFormatAdapter | None = None,
    ) -> None:
        """``response_format_adapter`` lets a backend layer (``trouter.local``) translate
        structured-output requests for its servers without this module knowing about them."""
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.timeout_s = timeout_s
        self.backoff_base_s = backoff_base_s
        self.response_format_adapter = response_format_adapter
        self.stats = ClientStats()
        self.cache: CompletionCache | None = None
        if use_cache:
            if cache_dir is None:
                from trouter.config import cache_dir as default_cache_dir

                cache_dir = default_cache_dir()
            self.cache = CompletionCache(Path(cache_dir) / "llm_cache.sqlite")
        self._semaphores: dict[int, asyncio.Semaphore] = {}
        self._unpriced_warned: set[str] = set()

    def _semaphore(self) -> asyncio.Semaphore:
        """One semaphore per event loop (``complete()`` runs each call in a fresh loop)."""
        loop = asyncio.get_running_loop()
        sem = self._semaphores.get(id(loop))
        if sem is None:
            self._semaphores = {id(loop): asyncio.Semaphore(self.max_concurrency)}
            sem = self._semaphores[id(loop)]
        return sem

    async def acomplete(
        self,
        endpoint: ModelEndpoint,
        messages: Messages,
        *,
        temperature: float = 0.0,
        max_tokens: int | None = None,
        response_format: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Completion:
        """One chat completion; raises :class:`LLMError` when it fails for good."""
        self.stats.calls += 1
        key = cache_key(
            endpoint.litellm_model,
            endpoint.api_base,
            messages,
            temperature,
            max_tokens,
            response_format,
            extra,
        )
        hit = self.peek(
            endpoint,
            messages,
            temperature=temperature,
            max_tokens=max_tokens,
            response_format=response_format,
            extra=extra,
        )
        if hit is not None:
            self.stats.cache_hits += 1
            return hit
        try:
            api_key = endpoint.api_key()
        except MissingAPIKeyError as err:
            self.stats.failures += 1
            raise LLMError(endpoint.name, "missing_key", str(err)) from None
        request: dict[str, Any] = {
            "model": endpoint.litellm_model,
            "messages": messages,
            "temperature": temperature,
            "api_key": api_key,
            "timeout": self.timeout_s,
            "num_retries": 0,  # retries are ours
            "max_retries": 0,  # ... and not the OpenAI SDK's either
        }
        if endpoint.api_base:
            request["api_base"] = endpoint.api_base
        if max_tokens is not None:
            request["max_tokens"] = max_tokens
        if response_format is not None:
            adapt = self.response_format_adapter
            request["response_format"] = (
                adapt(endpoint, response_format) if adapt else response_format
            )
        request.update(extra or {})
        async with self._semaphore():
            completion = await self._with_retries(endpoint, request, api_key)
        self.stats.spent_usd += completion.cost_usd or 0.0
        if self.cache is not None:
            value = asdict(completion)
            for transient in ("cached", "attempts", "model", "original_cost_usd"):
                value.pop(transient)
            value.pop("original_latency_s")
            if not self.cache.put(key, value):
                self.stats.cache_write_failures += 1
        return completion

    def peek(
        self,
        endpoint: ModelEndpoint,
        messages: Messages,
        *,
        temperature: float = 0.0,
        max_tokens: int | None = None,
        response_format: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Completion | None:
        """The cached completion for this request, or None; never calls the model.

        Explicit pool prices are applied to the cached token counts, so editing a price in
        the pool file changes the recorded cost of cached answers too.
        """
        if self.cache is None:
            return None
        key = cache_key(
            endpoint.litellm_model,
            endpoint.api_base,
            messages,
            temperature,
            max_tokens,
            response_format,
            extra,
        )
        hit = self.cache.get(key)
        if hit is None or not isinstance(hit.get("text"), str):
            return None
        tin, tout = int(hit.get("input_tokens") or 0), int(hit.get("output_tokens") or 0)
        original = hit.get("cost_usd")
        if endpoint.price_source == "pool":
            original = endpoint.cost(tin, tout)
        return Completion(
            text=hit["text"],
            input_tokens=tin,
            output_tokens=tout,
            cost_usd=0.0,
            latency_s=0.0,
            model=endpoint.name,
            cached=True,
            cost_note="cache hit: nothing spent",
            original_cost_usd=original,
            original_latency_s=hit.get("latency_s"),
        )

    async def _with_retries(
        self, endpoint: ModelEndpoint, request: dict[str, Any], api_key: str
    ) -> Completion:
        attempt = 0
        while True:
            attempt += 1
            self.stats.http_attempts += 1
            started = time.perf_counter()
            try:
                response = await asyncio.wait_for(
                    litellm.acompletion(**request), timeout=self.timeout_s + 5.0
                )
                latency = time.perf_counter() - started
                return self._completion(endpoint, request["messages"], response, latency, attempt)
            except Exception as err:  # classified below; nothing escapes unclassified
                kind, status, retryable = classify(err)
                message = scrub(str(err), api_key)
                if not retryable or attempt > self.max_retries:
                    self.stats.failures += 1
                    raise LLMError(endpoint.name, kind, message, status, attempt) from None
                delay = self.backoff_base_s * (2 ** (attempt - 1)) * random.uniform(0.5, 1.5)
                hinted = retry_after(err)
                if hinted is not None:
                    delay = max(delay, hinted)
                delay = min(delay, MAX_BACKOFF_S)
                log.info("%s: %s, retry %d in %.2fs", endpoint.name, kind, attempt, delay)
                await asyncio.sleep(delay)

    def _completion(
        self,
        endpoint: ModelEndpoint,
        messages: Messages,
        response: Any,
        latency: float,
        attempts: int,
    ) -> Completion:
        """Text, tokens and cost from a LiteLLM ``ModelResponse``; ValueError if unusable."""
        choices = getattr(response, "choices", None)
        if not choices:
            raise ValueError("the response has no choices")
        text = choices[0].message.content
        if text is None:
            text = ""
        usage = getattr(response, "usage", None)
        tin = int(getattr(usage, "prompt_tokens", 0) or 0)
        tout = int(getattr(usage, "completion_tokens", 0) or 0)
        note = None
        if usage is None or (tin == 0 and tout == 0):
            tin = litellm.token_counter(model=endpoint.litellm_model, messages=messages)
            tout = litellm.token_counter(model=endpoint.litellm_model, text=text)
            note = "token counts estimated (the server reported no usage)"
        cost, cost_note = self._cost(endpoint, response, tin, tout)
        return Completion(
            text=text,
            input_tokens=tin,
            output_tokens=tout,
            cost_usd=cost,
            latency_s=latency,
            model=endpoint.name,
            attempts=attempts,
            cost_note="; ".join(n for n in (note, cost_note) if n) or None,
            original_cost_usd=cost,
            original_latency_s=latency,
        )

    def _cost(
        self, endpoint: ModelEndpoint, response: Any, tin: int, tout: int
    ) -> tuple[float | None, str | None]:
        """Explicit pool prices, else LiteLLM's cost function, else the price map, else None."""
        if endpoint.price_source == "pool":
            return endpoint.cost(tin, tout), None
        try:
            cost = litellm.completion_cost(
                completion_response=response, model=endpoint.litellm_model
            )
            if cost is not None:
                return float(cost), "priced by litellm.completion_cost"
        except Exception:  # unknown to LiteLLM: fall through to the price map
            pass
        if endpoint.priced:
            return endpoint.cost(tin, tout), "priced from LiteLLM's price map"
        if endpoint.name not in self._unpriced_warned:
            self._unpriced_warned.add(endpoint.name)
            log.warning(
                "pool model %r (%s) has no price in the pool file or LiteLLM's price map; "
                "its cost is recorded as unknown",
                endpoint.name,
                endpoint.litellm_model,
            )
        return None, "no price known for this model"

    async def amap(self, calls: Sequence[LLMCall]) -> list[Completion | LLMError]:
        """Run calls concurrently (at most ``max_concurrency`` at once), in input order."""

        async def one(call: LLMCall) -> Completion | LLMError:
            try:
                return await self.acomplete(
                    call.endpoint,
                    call.messages,
                    temperature=call.temperature,
                    max_tokens=call.max_tokens,
                    response_format=call.response_format,
                    extra=call.extra,
                )
            except LLMError as err:
                return err

        return list(await asyncio.gather(*(one(c) for c in calls)))

    def complete(self, endpoint: ModelEndpoint, messages: Messages, **kwargs: Any) -> Completion:
        """Blocking :meth:`acomplete` (not from inside a running event loop)."""
        return asyncio.run(self.acomplete(endpoint, messages, **kwargs))

    def complete_many(self, calls: Sequence[LLMCall]) -> list[Completion | LLMError]:
        """Blocking :meth:`amap`."""
        return asyncio.run(self.amap(calls))

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()
