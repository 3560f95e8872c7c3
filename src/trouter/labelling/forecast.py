"""``trouter label --dry-run``: the calls and cost a labelling run would make, calling nothing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trouter.labelling.judge import JUDGE_RESPONSE_FORMAT, answer_messages, judge_messages
from trouter.labelling.settings import LabelSettings
from trouter.llm.client import LLMClient, count_prompt_tokens, supports_response_schema
from trouter.llm.pool import ModelEndpoint


@dataclass
class Estimate:
    """A dry run's forecast: calls still to make and their cost."""

    questions: int
    calls: int
    cached_calls: int
    cost_usd: float
    unpriced_models: list[str]
    input_tokens: int
    output_tokens: int


def estimate(
    client: LLMClient,
    models: list[ModelEndpoint],
    judge: ModelEndpoint,
    questions: list[dict[str, Any]],
    settings: LabelSettings | None = None,
) -> Estimate:
    """Calls and cost a run would make, without calling anything.

    Prompt tokens come from ``litellm.token_counter``; answers are assumed
    ``assumed_answer_tokens`` long (capped by ``answer_max_tokens``) and verdicts 8 tokens.
    Calls already in the cache are counted apart and cost nothing.
    """
    settings = settings or LabelSettings()
    judge_format = JUDGE_RESPONSE_FORMAT if supports_response_schema(judge) else None
    assumed = settings.assumed_answer_tokens
    if settings.answer_max_tokens is not None:
        assumed = min(assumed, settings.answer_max_tokens)
    result = Estimate(len(questions), 0, 0, 0.0, [], 0, 0)
    unpriced: set[str] = set()
    for q in questions:
        for endpoint in models:
            messages = answer_messages(q["question"])
            hit = client.peek(
                endpoint, messages, temperature=0.0, max_tokens=settings.answer_max_tokens
            )
            answer_text = hit.text if hit is not None else ""
            if hit is not None:
                result.cached_calls += 1
            else:
                tin = count_prompt_tokens(endpoint, messages)
                _add(result, endpoint, tin, assumed, unpriced)
            judging = judge_messages(q["question"], q["reference"], answer_text)
            verdict = None
            if hit is not None:
                verdict = client.peek(
                    judge,
                    judging,
                    temperature=0.0,
                    max_tokens=settings.judge_max_tokens,
                    response_format=judge_format,
                )
            if verdict is not None:
                result.cached_calls += 1
                continue
            tin = count_prompt_tokens(judge, judging)
            _add(result, judge, tin + (0 if hit is not None else assumed), 8, unpriced)
    result.unpriced_models = sorted(unpriced)
    return result


def _add(result: Estimate, endpoint: ModelEndpoint, tin: int, tout: int, unpriced: set) -> None:
    result.calls += 1
    result.input_tokens += tin
    result.output_tokens += tout
    cost = endpoint.cost(tin, tout)
    if cost is None:
        unpriced.add(endpoint.name)
    else:
        result.cost_usd += cost
