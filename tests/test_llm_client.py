"""The LLM client and pool config against the local stand-in server, through real LiteLLM."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import litellm
import pytest
from standin import StandIn, prompt_tokens, standin  # noqa: F401 - fixture

from trouter.llm.client import LLMCall, LLMClient, LLMError
from trouter.llm.pool import ModelEndpoint, Pool, PoolConfigError

SECRET = "sk-standin-secret-0123456789"


def make_pool(server: StandIn) -> Pool:
    return Pool.from_dict(
        {
            "models": [
                {
                    "name": "small",
                    "litellm_model": "openai/standin-small",
                    "api_base": server.base_url,
                    "api_key_env": "STANDIN_KEY",
                    "input_price_per_mtok": 2.0,
                    "output_price_per_mtok": 10.0,
                },
                {
                    "name": "mini",
                    "litellm_model": "openai/gpt-4o-mini",
                    "api_base": server.base_url,
                },
                {"name": "mystery", "litellm_model": "openai/no-such", "api_base": server.base_url},
            ]
        },
        source="test-pool.yaml",
    )


@pytest.fixture
def pool(standin: StandIn, monkeypatch: pytest.MonkeyPatch) -> Pool:  # noqa: F811
    monkeypatch.setenv("STANDIN_KEY", SECRET)
    return make_pool(standin)


@pytest.fixture
def client(tmp_path: Path) -> LLMClient:
    made = LLMClient(cache_dir=tmp_path, backoff_base_s=0.01, timeout_s=0.5, max_retries=3)
    yield made
    made.close()


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_answer_tokens_and_explicit_price(client, pool, standin):  # noqa: F811
    messages = ask("What is the capital of France?")
    done = client.complete(pool.endpoint("small"), messages)
    assert done.text == "standin-small answers: What is the capital of France?"
    assert done.input_tokens == prompt_tokens(messages)  # the server's reported usage
    assert done.output_tokens > 0 and not done.cached and done.attempts == 1
    assert done.cost_usd == pytest.approx(
        (done.input_tokens * 2.0 + done.output_tokens * 10.0) / 1e6
    )
    # the key came from the environment variable and went only into the HTTP header
    assert standin.requests[-1]["headers"]["authorization"] == f"Bearer {SECRET}"


def test_price_map_fallback_and_unknown_price(client, pool):
    mini = pool.endpoint("mini")
    info = litellm.model_cost["gpt-4o-mini"]
    assert mini.price_source == "litellm"
    assert mini.input_price_per_mtok == pytest.approx(info["input_cost_per_token"] * 1e6)
    done = client.complete(mini, ask("hello"))
    expected = (
        done.input_tokens * info["input_cost_per_token"]
        + done.output_tokens * info["output_cost_per_token"]
    )
    assert done.cost_usd == pytest.approx(expected)
    unknown = client.complete(pool.endpoint("mystery"), ask("hello"))
    assert unknown.cost_usd is None and "no price" in unknown.cost_note


def test_cache_hit_is_free_and_makes_no_http_call(client, pool, standin, tmp_path):  # noqa: F811
    messages = ask("cache me")
    first = client.complete(pool.endpoint("small"), messages)
    assert standin.total_calls == 1 and first.cost_usd > 0
    again = client.complete(pool.endpoint("small"), messages)
    assert again.cached and again.cost_usd == 0 and again.text == first.text
    assert standin.total_calls == 1
    # persistent: a new client over the same folder still hits; other parameters miss
    other = LLMClient(cache_dir=tmp_path)
    assert other.complete(pool.endpoint("small"), messages).cached
    assert not other.complete(pool.endpoint("small"), messages, temperature=0.7).cached
    assert standin.total_calls == 2
    other.close()
    assert SECRET.encode() not in (tmp_path / "llm_cache.sqlite").read_bytes()


@pytest.mark.parametrize("status", [429, 500, 503])
def test_transient_errors_are_retried(client, pool, standin, status):  # noqa: F811
    standin.fail_next(2, status=status)
    done = client.complete(pool.endpoint("small"), ask("retry me"))
    assert done.attempts == 3 and standin.total_calls == 3
    assert done.text.endswith("retry me")


def test_retry_after_is_honoured(client, pool, standin):  # noqa: F811
    standin.fail_next(1, status=429, retry_after=0.4)
    started = time.perf_counter()
    done = client.complete(pool.endpoint("small"), ask("slow down"))
    assert done.attempts == 2 and time.perf_counter() - started >= 0.4


def test_dropped_connection_and_malformed_body_are_retried(client, pool, standin):  # noqa: F811
    standin.drop_next(1)
    standin.malformed_next(1)
    done = client.complete(pool.endpoint("small"), ask("flaky"))
    assert done.attempts == 3 and standin.total_calls == 3


def test_timeout_retries_then_fails(tmp_path, pool, standin):  # noqa: F811
    standin.hang_next(10, seconds=2.0)
    client = LLMClient(cache_dir=tmp_path, timeout_s=0.3, max_retries=2, backoff_base_s=0.01)
    with pytest.raises(LLMError) as caught:
        client.complete(pool.endpoint("small"), ask("hang"))
    assert caught.value.kind == "timeout" and caught.value.attempts == 3
    assert standin.total_calls == 3  # 1 + max_retries, none by LiteLLM or the OpenAI SDK
    assert client.cache is not None and len(client.cache) == 0  # failures are not cached


def test_client_errors_are_not_retried(client, pool, standin):  # noqa: F811
    standin.fail_next(5, status=400)
    with pytest.raises(LLMError) as caught:
        client.complete(pool.endpoint("small"), ask("bad"))
    assert caught.value.kind == "bad_request" and standin.total_calls == 1
    standin.reset()
    standin.fail_next(5, status=401)
    with pytest.raises(LLMError) as caught:
        client.complete(pool.endpoint("small"), ask("bad key"))
    assert caught.value.kind == "auth" and standin.total_calls == 1
    assert SECRET not in str(caught.value)


def test_missing_key_variable_is_named(client, pool, standin, monkeypatch):  # noqa: F811
    monkeypatch.delenv("STANDIN_KEY")
    with pytest.raises(LLMError, match="STANDIN_KEY") as caught:
        client.complete(pool.endpoint("small"), ask("no key"))
    assert caught.value.kind == "missing_key" and standin.total_calls == 0


def test_amap_keeps_order_limits_concurrency_and_returns_errors(tmp_path, pool, standin):  # noqa: F811
    standin.latency_s = 0.05
    standin.fail_next(10, status=400, model="gpt-4o-mini")
    client = LLMClient(cache_dir=tmp_path, max_concurrency=3, backoff_base_s=0.01)
    calls = [LLMCall(pool.endpoint("small"), ask(f"question {i}")) for i in range(12)]
    calls.insert(5, LLMCall(pool.endpoint("mini"), ask("fails")))
    results = asyncio.run(client.amap(calls))
    assert isinstance(results[5], LLMError) and results[5].model == "mini"
    texts = [r.text for i, r in enumerate(results) if i != 5]
    assert texts == [f"standin-small answers: question {i}" for i in range(12)]
    assert standin.max_in_flight == 3


def test_pool_yaml_errors_name_model_and_field(tmp_path):
    path = tmp_path / "pool.yaml"
    path.write_text(
        "models:\n"
        "  - name: good\n    litellm_model: openai/gpt-4o-mini\n"
        "  - name: typo\n    litellm_model: openai/x\n    input_price_per_mtok: cheap\n"
    )
    with pytest.raises(PoolConfigError) as caught:
        Pool.load(path)
    message = str(caught.value)
    assert str(path) in message and "'typo'" in message and "input_price_per_mtok" in message
    path.write_text("models:\n  - name: extra\n    litellm_model: openai/x\n    pirce: 3\n")
    with pytest.raises(PoolConfigError, match=r"'extra'.*'pirce': unknown field"):
        Pool.load(path)
    path.write_text(
        "models:\n  - name: leak\n    litellm_model: openai/x\n    api_key_env: sk-abc\n"
    )
    with pytest.raises(PoolConfigError) as caught:
        Pool.load(path)
    assert "api_key_env" in str(caught.value) and "sk-abc" not in str(caught.value)
    with pytest.raises(PoolConfigError, match="does not exist"):
        Pool.load(tmp_path / "missing.yaml")


def test_pool_lookup_and_prices():
    pool = Pool.from_dict(
        {"models": [{"name": "a", "litellm_model": "openai/gpt-4o-mini"}]}, source="p.yaml"
    )
    assert pool.endpoint("a") is pool.get("a") and "a" in pool
    with pytest.raises(KeyError, match="'zz' is not in the pool in p.yaml"):
        pool.endpoint("zz")
    explicit = ModelEndpoint(
        name="b",
        litellm_model="openai/gpt-4o-mini",
        input_price_per_mtok=1,
        output_price_per_mtok=3,
    )
    assert explicit.price_source == "pool" and explicit.cost(1_000_000, 1_000_000) == 4.0


def test_standin_streams_through_litellm(standin):  # noqa: F811
    async def collect() -> tuple[str, int]:
        stream = await litellm.acompletion(
            model="openai/standin-small",
            api_base=standin.base_url,
            api_key="unused",
            messages=ask("stream this please"),
            stream=True,
            stream_options={"include_usage": True},
            max_retries=0,
        )
        text, usage = "", 0
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
            if getattr(chunk, "usage", None):
                usage = chunk.usage.completion_tokens
        return text, usage

    text, completion_tokens = asyncio.run(collect())
    assert text == "standin-small answers: stream this please"
    assert completion_tokens > 0
