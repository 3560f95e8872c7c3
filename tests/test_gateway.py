"""The proxy's gateway features over real HTTP with the official openai client.

Client keys, policies as weights and headers, USD budgets per request and per key per day,
unknown OpenAI fields, conversation-aware routing (follow-ups, tool loops, sessions),
capabilities (images, tools, context length), requests with no user text,
``models.retrieve``, and cancelling the upstream call when a client leaves. The router is the
kNN on a real RouterBench slice; the upstream is the loopback stand-in, with per-model prices
and declared capabilities in the pool file.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
import yaml
from standin import StandIn
from test_proxy import _metrics, questions, serving  # noqa: F401  (shared fixture)
from test_serving_api import routerbench_router_dir  # noqa: F401  (shared session fixture)
from typer.testing import CliRunner

import trouter
from trouter.cli import app as cli_app
from trouter.llm.pool import Pool
from trouter.serving.auth import ClientKey, KeyRing, digest, keys_from_env, read_keys_file
from trouter.serving.conversation import needs
from trouter.serving.limits import Limits
from trouter.serving.policy import estimate_tokens, predicted_cost
from trouter.serving.proxy import ProxySettings, create_app
from trouter.serving.requests import parse_chat

KEY_ENV = "TROUTER_TEST_GATEWAY_KEY"
ALICE, BOB = "trk-alice-0123456789abcdefghij", "trk-bob-0123456789abcdefghijkl"


def gateway_pool(service, base_url: str, questions: list[str]) -> dict:  # noqa: F811
    """The pool document: distinct prices, and capabilities chosen so that the top choice
    of the test questions cannot take some requests."""
    models = service.models
    no_tools = service.route(questions[0], scenario="balanced").model
    short = service.route(questions[2], scenario="performance-first").model
    vision = [m for m in models if m not in (no_tools, short)][-2:]
    entries = []
    for i, name in enumerate(models):
        caps = {"vision": name in vision}
        if name == no_tools:
            caps["tools"] = caps["json_schema"] = False
        if name == short:
            caps["max_input_tokens"] = 300
        entries.append(
            {
                "name": name,
                "litellm_model": f"openai/{name}",
                "api_base": base_url,
                "api_key_env": KEY_ENV,
                "input_price_per_mtok": float(i + 1),
                "output_price_per_mtok": float(2 * (i + 1)),
                "capabilities": caps,
            }
        )
    return {
        "models": entries,
        "no_tools": no_tools,
        "short": short,
        "vision": vision,
    }


@pytest.fixture(scope="module")
def gw(routerbench_router_dir, questions, tmp_path_factory) -> Iterator[dict]:  # noqa: F811
    os.environ[KEY_ENV] = "sk-gateway-test-key-0123456789"
    service = trouter.load(routerbench_router_dir)
    standin = StandIn(models=service.models).start()
    plan = gateway_pool(service, standin.base_url, questions)
    pool_file = tmp_path_factory.mktemp("gw") / "pool.yaml"
    pool_file.write_text(yaml.safe_dump({"models": plan["models"]}))
    pool = Pool.load(pool_file)
    keys = KeyRing(
        [
            ClientKey(name="alice", sha256=digest(ALICE), policy="cost-first"),
            ClientKey(name="bob", sha256=digest(BOB), daily_budget_usd=1e-6),
        ]
    )
    limits = Limits()
    app = create_app(
        trouter.load(routerbench_router_dir, pool),
        pool,
        ProxySettings(upstream_timeout_s=5.0, limits=limits),
        keys,
    )
    with serving(app, limits) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=ALICE, max_retries=0, timeout=20)
        yield {**plan, "service": service, "standin": standin, "base": base, "client": client}
    standin.stop()
    os.environ.pop(KEY_ENV, None)


@pytest.fixture
def up(gw) -> StandIn:
    gw["standin"].reset()
    gw["standin"].responder = __import__("standin").echo_responder
    return gw["standin"]


def chat(gw, messages, model="trouter-balanced", **kwargs):
    raw = gw["client"].chat.completions.with_raw_response.create(
        model=model, messages=messages, **kwargs
    )
    return raw.headers["x-trouter-model"], raw


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


# -- client keys -------------------------------------------------------------------------


def test_requests_without_a_known_key_get_openai_401(gw, up):
    for key in ("", "trk-not-a-key-000000000000"):
        client = openai.OpenAI(base_url=f"{gw['base']}/v1", api_key=key or "x", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as err:
            client.chat.completions.create(model="trouter", messages=user("hi"))
        assert err.value.body["code"] == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            client.models.list()
    assert httpx.get(f"{gw['base']}/health").status_code == 200  # health stays open
    assert up.total_calls == 0
    model, raw = chat(gw, user("hi there"))
    assert raw.headers["x-trouter-key"] == "alice" and up.total_calls == 1


def test_keys_add_prints_a_key_once_and_stores_only_its_hash(tmp_path):
    keys_file = tmp_path / "keys.yaml"
    args = ["keys", "add", "carol", "--file", str(keys_file), "--policy", "0.6:-0.4"]
    result = CliRunner().invoke(cli_app, [*args, "--daily-budget-usd", "2.5"])
    assert result.exit_code == 0, result.output
    key = result.stdout.strip().splitlines()[0]
    assert key.startswith("trk-") and len(key) > 40
    assert key not in keys_file.read_text()
    (entry,) = read_keys_file(keys_file)
    assert entry.sha256 == digest(key) and entry.daily_budget_usd == 2.5
    assert KeyRing([entry]).identify(f"Bearer {key}") == entry
    again = CliRunner().invoke(cli_app, ["keys", "add", "carol", "--file", str(keys_file)])
    assert again.exit_code == 2 and "already has a key named 'carol'" in again.output


def test_keys_from_the_environment():
    (named, bare) = keys_from_env("dave=trk-dave-000000000000000, trk-bare-00000000000000")
    assert named.name == "dave" and bare.name == "env-2"
    assert KeyRing([named, bare]).identify("Bearer trk-bare-00000000000000") == bare


def test_serve_refuses_a_public_host_without_keys(tmp_path, routerbench_router_dir):  # noqa: F811
    pool = tmp_path / "pool.yaml"
    pool.write_text("models: [{name: a, litellm_model: openai/a}]")
    args = ["serve", "--model-dir", str(routerbench_router_dir), "--pool", str(pool)]
    result = CliRunner().invoke(cli_app, [*args, "--host", "0.0.0.0"], env={"TROUTER_API_KEYS": ""})
    assert result.exit_code == 2 and "--no-auth" in result.output
    # with keys, listening on every interface still needs the host names clients use
    keys = {"TROUTER_API_KEYS": "ops=trk-ops-0000000000000000"}
    result = CliRunner().invoke(cli_app, [*args, "--host", "0.0.0.0"], env=keys)
    assert result.exit_code == 2 and "--allowed-host" in result.output


# -- policies ----------------------------------------------------------------------------


def test_any_weights_as_a_model_name_and_the_policy_header(gw, up, questions):  # noqa: F811
    service = gw["service"]
    q = questions[3]
    model, raw = chat(gw, user(q), model="trouter-0.7:-0.3")
    assert model == service.route(q, weights=(0.7, -0.3)).model
    assert raw.headers["x-trouter-policy"] == "trouter-0.7:-0.3"
    for policy in ("cost-first", "0.9:-0.1"):
        model, _ = chat(
            gw,
            user(q),
            model="trouter-performance-first",
            extra_headers={"x-trouter-policy": policy},
        )
        weights = (0.9, -0.1) if ":" in policy else None
        expected = service.route(q, weights=weights, scenario=None if weights else policy)
        assert model == expected.model
    with pytest.raises(openai.NotFoundError):
        chat(gw, user(q), model="trouter-fast:cheap")
    with pytest.raises(openai.BadRequestError) as err:
        chat(gw, user(q), extra_headers={"x-trouter-policy": "fastest"})
    assert err.value.body["code"] == "invalid_policy"


def test_model_trouter_uses_the_keys_policy(gw, up, questions):  # noqa: F811
    picks = {q: gw["service"].route(q, scenario="cost-first").model for q in questions[:8]}
    for q, expected in picks.items():
        assert chat(gw, user(q), model="trouter")[0] == expected


# -- budgets -----------------------------------------------------------------------------


def _predicted(gw, messages: list[dict], **fields) -> dict[str, float]:
    raw = {"model": "trouter", "messages": messages, **fields}
    req = parse_chat(raw)
    tokens = estimate_tokens(raw, needs(raw, req.messages).input_tokens)
    pool = Pool.from_dict({"models": gw["models"]})
    return {e.name: predicted_cost(e, tokens) for e in pool.models}


def test_max_cost_header_picks_the_best_model_under_it_or_402(gw, up, questions):  # noqa: F811
    q = questions[4]
    ranking = gw["service"].route(q, scenario="performance-first").ranking
    costs = _predicted(gw, user(q))
    budget = costs[ranking[0]] * 0.999  # the first choice no longer fits
    expected = next(m for m in ranking if costs[m] <= budget)
    model, _ = chat(
        gw,
        user(q),
        model="trouter-performance-first",
        extra_headers={"x-trouter-max-cost-usd": f"{budget:.12f}"},
    )
    assert model == expected != ranking[0]
    with pytest.raises(openai.APIStatusError) as err:
        chat(gw, user(q), extra_headers={"x-trouter-max-cost-usd": "0.0000000001"})
    assert err.value.status_code == 402 and err.value.body["code"] == "budget_exceeded"
    assert "cheapest is" in err.value.body["message"]
    assert up.total_calls == 1


def test_daily_budget_of_a_key_is_counted_from_real_usage(gw, up, questions):  # noqa: F811
    client = openai.OpenAI(base_url=f"{gw['base']}/v1", api_key=BOB, max_retries=0)
    client.chat.completions.create(model="trouter", messages=user(questions[5]), user="u-17")
    assert up.requests[0]["body"]["user"] == "u-17"  # accepted and forwarded
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(model="trouter", messages=user(questions[5]))
    assert err.value.body["code"] == "daily_budget_exceeded"
    assert up.total_calls == 1
    spent = _metrics({"base": gw["base"]})
    assert spent[("trouter_client_cost_usd_total", (("client", "bob"),))] > 1e-6


# -- unknown fields, models.retrieve -----------------------------------------------------


def test_unknown_openai_fields_are_forwarded(gw, up, questions):  # noqa: F811
    gw["client"].chat.completions.create(
        model="trouter-balanced",
        messages=user(questions[0]),
        reasoning_effort="low",
        store=False,
        metadata={"team": "search"},
        extra_body={"vendor_option": 3},
    )
    body = up.requests[0]["body"]
    assert body["reasoning_effort"] == "low" and body["store"] is False
    assert body["metadata"] == {"team": "search"} and body["vendor_option"] == 3


def test_models_retrieve(gw, up):
    client = gw["client"]
    assert client.models.retrieve("trouter-balanced").id == "trouter-balanced"
    assert client.models.retrieve("trouter-0.6:-0.4").owned_by == "trouter"
    name = gw["service"].models[0]
    assert client.models.retrieve(name).owned_by == "pool"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-9")


# -- conversations -----------------------------------------------------------------------


def test_a_short_follow_up_is_routed_with_the_task_before_it(gw, up, questions):  # noqa: F811
    service = gw["service"]
    follow = "ok thanks"
    task = next(
        q
        for q in questions
        if service.route(f"{follow}\n{q}", scenario="balanced").model
        != service.route(follow, scenario="balanced").model
    )
    messages = [
        *user(task),
        {"role": "assistant", "content": "Here it is."},
        *user(follow),
    ]
    model, _ = chat(gw, messages)
    assert model == service.route(f"{follow}\n{task}", scenario="balanced").model
    assert model != service.route(follow, scenario="balanced").model


def _tool_turns(question: str) -> list[dict]:
    call = {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
    return [
        *user(question),
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ]


def test_a_tool_loop_stays_on_the_model_that_started_it(gw, up, questions):  # noqa: F811
    q = questions[6]
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]
    ranking = [
        m for m in gw["service"].route(q, scenario="cost-first").ranking if m != gw["no_tools"]
    ]
    up.fail_next(1, 500, model=ranking[0])  # the first turn falls back to the second model
    first, _ = chat(gw, user(q), model="trouter-cost-first", tools=tools)
    assert first == ranking[1]
    looped, _ = chat(gw, _tool_turns(q), model="trouter-cost-first", tools=tools)
    assert looped == ranking[1]  # ranking[0] is healthy again, but the loop stays
    sticky = _metrics({"base": gw["base"]}).get(("trouter_session_sticky_requests_total", ()))
    assert sticky and sticky >= 1
    # a new user turn ends the loop: routed afresh
    after = [*_tool_turns(q), {"role": "assistant", "content": "42."}, *user(q)]
    assert chat(gw, after, model="trouter-cost-first", tools=tools)[0] == ranking[0]


def test_a_session_header_keeps_a_conversation_on_one_model(gw, up, questions):  # noqa: F811
    q = questions[7]
    ranking = gw["service"].route(q, scenario="balanced").ranking
    session = {"x-trouter-session": "conv-81"}
    up.fail_next(1, 500, model=ranking[0])
    assert chat(gw, user(q), extra_headers=session)[0] == ranking[1]
    assert chat(gw, user(q), extra_headers=session)[0] == ranking[1]
    assert chat(gw, user(q))[0] == ranking[0]  # without the session: routed afresh


def test_images_go_only_to_models_that_read_them(gw, up, questions):  # noqa: F811
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    content = [{"type": "text", "text": questions[1]}, image]
    model, _ = chat(gw, [{"role": "user", "content": content}])
    assert model in gw["vision"]
    only_image = [*user(questions[1]), {"role": "user", "content": [image]}]
    model, _ = chat(gw, only_image, model="trouter-cost-first")
    assert model in gw["vision"]


def test_tools_schemas_and_context_length_rule_out_models(gw, up, questions):  # noqa: F811
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    model, _ = chat(gw, user(questions[0]), tools=[tool])
    assert model != gw["no_tools"]
    assert chat(gw, user(questions[0]))[0] == gw["no_tools"]  # without tools it is the pick
    schema = {"name": "answer", "schema": {"type": "object"}}
    response_format = {"type": "json_schema", "json_schema": schema}
    model, _ = chat(gw, user(questions[0]), response_format=response_format)
    assert model != gw["no_tools"]
    long_system = {"role": "system", "content": "Context: " + "lorem ipsum " * 200}
    model, _ = chat(gw, [long_system, *user(questions[2])], model="trouter-performance-first")
    assert model != gw["short"]
    assert chat(gw, user(questions[2]), model="trouter-performance-first")[0] == gw["short"]


def test_requests_without_user_text_are_routed(gw, up):
    developer = [{"role": "developer", "content": "Summarise the release notes of numpy 2."}]
    assert chat(gw, developer)[1].status_code == 200
    blank = user("   ")
    assert chat(gw, blank, model="trouter-cost-first")[1].status_code == 200
    assert up.total_calls == 2


# -- a client that leaves ----------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_leaves_cancels_the_upstream_call(gw, up, questions, stream):  # noqa: F811
    before = _metrics({"base": gw["base"]})
    up.hang_next(5, 2.0)
    client = openai.OpenAI(base_url=f"{gw['base']}/v1", api_key=ALICE, max_retries=0)
    for _ in range(2):
        with pytest.raises(openai.APITimeoutError):
            client.with_options(timeout=0.5).chat.completions.create(
                model="trouter-balanced", messages=user(questions[8]), stream=stream
            )
    time.sleep(2.5)  # the hung upstream calls would have completed (and been billed) by now
    after = _metrics({"base": gw["base"]})

    def delta(name: str, **labels) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    flag = str(stream).lower()
    assert delta("trouter_client_aborted_requests_total", streamed=flag) == 2
    assert delta("trouter_requests_total", policy="trouter-balanced", status="499") == 2
    assert delta("trouter_requests_total", policy="trouter-balanced", status="200") == 0
    billed = sum(v for (n, _), v in after.items() if n == "trouter_cost_usd_total")
    assert billed == sum(v for (n, _), v in before.items() if n == "trouter_cost_usd_total")
