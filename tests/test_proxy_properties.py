"""Property test of the proxy: generated chat requests, well-formed and not, never get a 5xx.

Hypothesis builds request bodies from the OpenAI chat schema's fields with values of every
JSON type in every place (NaN and infinities, lone surrogates, content parts of the wrong
shape, unknown roles and models, junk fields, deep nesting, bytes that are not JSON). The
upstream (the stand-in) is healthy throughout, so every 5xx would be the proxy's own fault:
the property is that none occurs, that every error has OpenAI's shape, and that every 200 is
a completion. ``derandomize`` makes the run the same on every machine. Of the
``TROUTER_PROPERTY_EXAMPLES`` requests (default 2,000), an eighth go through the LiteLLM
path and the rest through the direct (aiohttp) path.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_proxy import running_proxy
from test_serving_api import routerbench_router_dir  # noqa: F401  (shared session fixture)

from trouter.serving.proxy import POLICY_MODELS, ProxySettings

EXAMPLES = int(os.environ.get("TROUTER_PROPERTY_EXAMPLES", "2000"))
ROLES = ["system", "developer", "user", "assistant", "tool", "function"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=4,
)
texts = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["\ud800", "a \udfff b", "", "   ", "x" * 5000, "\x00", "é 漢字 🙂"]),
)
content_parts = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": st.one_of(texts, json_values)}),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["image_url", "input_audio", "mystery"])},
        optional={"image_url": json_values},
    ),
    st.dictionaries(st.text(max_size=5), json_values, max_size=3),
)
messages = st.fixed_dictionaries(
    {
        "role": st.one_of(st.sampled_from(ROLES), st.sampled_from(["user"] * 4), json_values),
        "content": st.one_of(texts, texts, st.lists(content_parts, max_size=3), json_values),
    },
    optional={"name": st.one_of(st.text(max_size=5), json_values), "tool_call_id": json_values},
)
numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(0, 2),
    st.integers(-5, 5000),
    json_values,
)


def bodies(models: list[str]) -> st.SearchStrategy[bytes]:
    """Valid requests, valid requests with one field replaced by anything, and junk."""
    good_text = st.text(min_size=1, max_size=40).filter(str.strip)
    valid = st.fixed_dictionaries(
        {
            "model": st.sampled_from([*POLICY_MODELS, *models[:2]]),
            "messages": st.tuples(
                st.lists(
                    st.fixed_dictionaries(
                        {"role": st.sampled_from(ROLES[:4]), "content": good_text}
                    ),
                    max_size=2,
                ),
                st.fixed_dictionaries(
                    {
                        "role": st.just("user"),
                        "content": st.one_of(
                            good_text,
                            st.lists(
                                st.fixed_dictionaries({"type": st.just("text"), "text": good_text}),
                                min_size=1,
                                max_size=2,
                            ),
                        ),
                    }
                ),
            ).map(lambda pair: [*pair[0], pair[1]]),
        },
        optional={
            "temperature": st.floats(0, 2),
            "top_p": st.floats(0, 1),
            "max_tokens": st.integers(1, 500),
            "stream": st.booleans(),
            "stop": st.lists(st.text(min_size=1, max_size=4), max_size=2),
            "seed": st.integers(0, 2**31),
            "user": st.text(max_size=8),
        },
    )
    fields = st.sampled_from(
        [
            "model",
            "messages",
            "temperature",
            "top_p",
            "max_tokens",
            "n",
            "stream",
            "stop",
            "seed",
            "response_format",
            "tools",
            "logit_bias",
            "not_an_openai_field",
        ]
    )
    mutated = st.tuples(valid, fields, st.one_of(numbers, json_values)).map(
        lambda t: {**t[0], t[1]: t[2]}
    )
    wild_message = st.tuples(valid, messages).map(
        lambda t: {**t[0], "messages": [*t[0]["messages"][:-1], t[1]]}
    )
    anything = st.fixed_dictionaries(
        {"model": json_values, "messages": st.one_of(st.lists(messages, max_size=3), json_values)}
    )
    as_json = st.one_of(valid, valid, mutated, wild_message, anything).map(
        lambda body: json.dumps(body, allow_nan=True).encode()
    )
    deep = st.integers(1, 20_000).map(lambda depth: b"[" * depth + b"]" * depth)
    return st.one_of(as_json, as_json, as_json, as_json, st.binary(max_size=60), deep)


@pytest.fixture(scope="module", params=["auto", "litellm"])
def proxy(request, routerbench_router_dir, tmp_path_factory) -> Iterator[dict]:  # noqa: F811
    settings = ProxySettings(max_body_bytes=200_000, upstream_timeout_s=10, upstream=request.param)
    folder = tmp_path_factory.mktemp("pool")
    statuses: Counter = Counter()
    with (
        running_proxy(routerbench_router_dir, folder, settings) as running,
        httpx.Client(base_url=running["base"], timeout=60) as client,
    ):
        yield {
            "client": client,
            "models": running["service"].models,
            "mode": request.param,
            "statuses": statuses,
        }
    print(f"\nproperty test ({request.param}): statuses {dict(statuses)}")


def _check(proxy: dict, body: bytes) -> None:
    with proxy["client"].stream(
        "POST", "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
    ) as reply:
        raw = reply.read()
    proxy["statuses"][reply.status_code] += 1
    assert reply.status_code < 500, f"{reply.status_code} for {body[:300]!r}: {raw[:300]!r}"
    if reply.status_code != 200:
        error = json.loads(raw)["error"]
        assert isinstance(error["message"], str) and error["type"]
    elif reply.headers["content-type"].startswith("text/event-stream"):
        assert raw.rstrip().endswith(b"data: [DONE]")
    else:
        assert json.loads(raw)["choices"]


def test_no_generated_request_gets_a_5xx(proxy):
    litellm_share = max(1, EXAMPLES // 8)  # LiteLLM's path costs more per call
    examples = EXAMPLES - litellm_share if proxy["mode"] == "auto" else litellm_share

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(body=bodies(proxy["models"]))
    def run(body: bytes) -> None:
        _check(proxy, body)

    run()
    answered = sum(proxy["statuses"].values())
    assert answered >= examples
    # the generator reaches past validation: a real share are answered by the upstream
    assert proxy["statuses"][200] >= examples // 5
