"""Schemathesis against the running proxy: requests generated from its OpenAPI schema, valid
and invalid, must never get a server error (5xx) or break the connection.

The proxy's own schema declares no body for the chat endpoint (it reads the raw request), so
the test adds the OpenAI chat request's shape to it before generating. The upstream is the
loopback stand-in, and the router is the kNN on a RouterBench slice that ``test_proxy`` uses.
Bounded: ``EXAMPLES`` cases per generation mode.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from test_proxy import running_proxy
from test_serving_api import routerbench_router_dir  # noqa: F401  (shared session fixture)

from trouter.serving.proxy import ProxySettings

schemathesis = pytest.importorskip("schemathesis")
from schemathesis.generation.modes import GenerationMode  # noqa: E402

EXAMPLES = 120
CHAT = "/v1/chat/completions"
_TEXT = {"type": "string", "maxLength": 200}
MESSAGE = {
    "type": "object",
    "properties": {
        "role": {"type": "string", "enum": ["system", "developer", "user", "assistant", "tool"]},
        "content": {
            "anyOf": [
                _TEXT,
                {"type": "null"},
                {
                    "type": "array",
                    "maxItems": 3,
                    "items": {
                        "type": "object",
                        "properties": {
                            "type": {"type": "string", "enum": ["text", "image_url", "refusal"]},
                            "text": _TEXT,
                            "image_url": {"type": "object", "properties": {"url": _TEXT}},
                        },
                        "required": ["type"],
                    },
                },
            ]
        },
        "name": _TEXT,
    },
    "required": ["role"],
}
CHAT_REQUEST = {
    "type": "object",
    "properties": {
        "model": {
            "anyOf": [
                {
                    "type": "string",
                    "enum": [
                        "trouter",
                        "trouter-balanced",
                        "trouter-cost-first",
                        "trouter-0.7:0.3",
                        "gpt-4-1106-preview",
                    ],
                },  # fmt: skip
                _TEXT,
            ]
        },
        "messages": {"type": "array", "minItems": 1, "maxItems": 4, "items": MESSAGE},
        "stream": {"type": "boolean"},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "max_tokens": {"type": "integer", "minimum": 1, "maximum": 64},
        "n": {"type": "integer", "minimum": 1, "maximum": 2},
        "stop": {"anyOf": [_TEXT, {"type": "array", "items": _TEXT, "maxItems": 2}]},
        "seed": {"type": "integer"},
        "user": _TEXT,
        "tools": {"type": "array", "maxItems": 2, "items": {"type": "object"}},
    },
    "required": ["model", "messages"],
}


@pytest.fixture(scope="module")
def proxy(routerbench_router_dir, tmp_path_factory) -> Iterator[dict]:  # noqa: F811
    settings_ = ProxySettings(max_body_bytes=100_000, max_attempts=2, upstream_timeout_s=5.0)
    with running_proxy(routerbench_router_dir, tmp_path_factory.mktemp("pool"), settings_) as run:
        yield run


POLICIES = ["trouter", "trouter-balanced", "trouter-cost-first", "trouter-0.7:0.3"]


def _schema(base: str):
    document = httpx.get(f"{base}/openapi.json", timeout=10).json()
    models = [m["id"] for m in httpx.get(f"{base}/v1/models", timeout=10).json()["data"]]
    body = copy.deepcopy(CHAT_REQUEST)
    body["properties"]["model"]["enum"] = sorted(set(POLICIES + models))
    document["paths"][CHAT]["post"]["requestBody"] = {
        "required": True,
        "content": {"application/json": {"schema": body}},
    }
    return schemathesis.openapi.from_dict(document)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_generated_requests_never_get_a_server_error(proxy, mode):
    base = proxy["base"]
    proxy["standin"].reset()
    failures: list[str] = []

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(_schema(base).as_strategy(generation_mode=mode))
    def one(case) -> None:
        response = case.call(base_url=base, timeout=30)
        if response.status_code >= 500:
            failures.append(
                f"{case.method} {case.formatted_path} body={case.body!r:.300} -> "
                f"{response.status_code} {response.text[:300]}"
            )

    one()
    assert failures == [], "\n".join(failures[:5])
    assert httpx.get(f"{base}/health", timeout=5).status_code == 200
