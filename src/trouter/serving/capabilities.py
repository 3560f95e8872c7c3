"""What each pool model can take: images, tools, a JSON schema, and how long a prompt.

The pool file's ``capabilities`` entry wins; what it leaves out comes from LiteLLM's model
information (``litellm.get_model_info``: ``supports_vision``, ``supports_function_calling``,
``supports_response_schema``, ``max_input_tokens``); what neither knows is unknown.

Unknown is treated differently per capability. An image sent to a text-only model is dropped
or refused by it, so images go only to models known to read them. Tools and JSON schemas are
widely supported by OpenAI-compatible servers, and the context length is only known for
listed models, so for those an unknown counts as supported; a model known *not* to support
them is never chosen.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass

from trouter.llm.pool import ModelEndpoint, price_map
from trouter.serving.conversation import Needs

log = logging.getLogger("trouter.serving")


@dataclass(frozen=True)
class ModelCapabilities:
    vision: bool | None = None
    tools: bool | None = None
    json_schema: bool | None = None
    max_input_tokens: int | None = None

    def refuses(self, needs: Needs) -> str | None:
        """Why this model cannot take the request, or None when it can."""
        if needs.vision and self.vision is not True:
            return "images"
        if needs.tools and self.tools is False:
            return "tools"
        if needs.json_schema and self.json_schema is False:
            return "JSON schema"
        if self.max_input_tokens is not None and needs.input_tokens > self.max_input_tokens:
            return f"context of {self.max_input_tokens} tokens"
        return None


def _bundled_info(litellm_model: str) -> dict:
    """The entry of LiteLLM's bundled model table, read without importing LiteLLM (about 150
    MiB): the full name, then without the provider prefix, as LiteLLM looks it up."""
    table = price_map()
    for key in (litellm_model, litellm_model.split("/", 1)[-1]):
        if isinstance(table.get(key), dict):
            return dict(table[key])
    return {}


def _litellm_info(litellm_model: str) -> dict:
    litellm = sys.modules.get("litellm")
    if litellm is None:  # not loaded (an all-OpenAI-compatible pool): its bundled table
        return _bundled_info(litellm_model)
    try:
        return dict(litellm.get_model_info(model=litellm_model))
    except Exception:  # noqa: BLE001  (unlisted models raise; the pool file may say more)
        return {}


def capabilities(endpoint: ModelEndpoint) -> ModelCapabilities:
    """The pool file's declaration over LiteLLM's model information."""
    info = _litellm_info(endpoint.litellm_model)
    declared = getattr(endpoint, "capabilities", None)

    def pick(field: str, litellm_key: str):
        value = getattr(declared, field, None) if declared is not None else None
        return value if value is not None else info.get(litellm_key)

    return ModelCapabilities(
        vision=pick("vision", "supports_vision"),
        tools=pick("tools", "supports_function_calling"),
        json_schema=pick("json_schema", "supports_response_schema"),
        max_input_tokens=pick("max_input_tokens", "max_input_tokens"),
    )


def pool_capabilities(endpoints: dict[str, ModelEndpoint]) -> dict[str, ModelCapabilities]:
    table = {name: capabilities(e) for name, e in endpoints.items()}
    for name, caps in table.items():
        log.info(
            "capabilities of %s: vision=%s tools=%s json_schema=%s max_input_tokens=%s",
            name,
            caps.vision,
            caps.tools,
            caps.json_schema,
            caps.max_input_tokens,
        )
    return table
