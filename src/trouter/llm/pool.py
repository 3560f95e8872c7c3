"""The model pool: which LLMs trouter may call, how to reach them and what they cost.

A pool is a small YAML file shared by ``trouter label``, ``trouter synth``, ``trouter serve``
and the Python API, so that every stage agrees on the model names a router was trained on::

    models:
      - name: small                        # the name routers and labelled data use
        litellm_model: openai/gpt-4o-mini  # what LiteLLM is asked for
        api_base: http://127.0.0.1:8080/v1 # optional: a local / self-hosted server
        api_key_env: OPENAI_API_KEY        # optional: the NAME of the variable with the key
        input_price_per_mtok: 0.15         # optional USD per million tokens; when absent,
        output_price_per_mtok: 0.60        #   LiteLLM's bundled price map is used
        routes_as: gpt-4-1106-preview      # optional: the trained-router model it stands in for

API keys are only ever read from the environment at call time; the file names the variable,
so a pool file can be committed and shared. Unknown fields are rejected (a typo in a price
field would otherwise silently fall back to the price map), and every error names the file,
the model and the field. A model with no price, or with only one of its two prices and no
entry in the price map for the other, is unpriced: its cost is unknown (None), never $0, and
:meth:`Pool.price_warnings` names it.

``routes_as`` lets a router trained on a public suite (whose models are that suite's) route a
current pool: the router's predictions for the named model decide for this one.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

#: Key sent to endpoints that need none (local servers): LiteLLM's OpenAI provider refuses to
#: send a request without some key.
NO_KEY = "no-key-needed"

#: A pool lists a few dozen models; a bigger file is a mistake (and slow to parse as YAML).
MAX_POOL_FILE_BYTES = 1_000_000
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class PoolConfigError(ValueError):
    """A pool file is missing, not YAML, or does not match the schema."""


class MissingAPIKeyError(RuntimeError):
    """A pool entry names an API-key variable that is not set in the environment."""


@functools.cache
def _bundled_price_map() -> dict[str, Any]:
    """LiteLLM's price map, without importing LiteLLM (several seconds) when it is not loaded.

    The same bundled JSON file that ``litellm.model_cost`` is read from when
    ``LITELLM_LOCAL_MODEL_COST_MAP`` is set (trouter always sets it: no network at import).
    """
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return {}
    path = Path(spec.submodule_search_locations[0]) / "model_prices_and_context_window_backup.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def price_map() -> dict[str, Any]:
    """``litellm.model_cost`` when LiteLLM is loaded (may hold registered prices), else the file."""
    litellm = sys.modules.get("litellm")
    model_cost = getattr(litellm, "model_cost", None)
    return model_cost if isinstance(model_cost, dict) and model_cost else _bundled_price_map()


def lookup_price(litellm_model: str) -> tuple[float, float] | None:
    """(input, output) USD per million tokens from the price map, or None when unlisted.

    Tries the full LiteLLM name (``openai/gpt-4o-mini``), then without the provider prefix.
    """
    table = price_map()
    candidates = [litellm_model]
    if "/" in litellm_model:
        candidates.append(litellm_model.split("/", 1)[1])
    for key in candidates:
        info = table.get(key)
        if not isinstance(info, dict):
            continue
        tin, tout = info.get("input_cost_per_token"), info.get("output_cost_per_token")
        if isinstance(tin, int | float) and isinstance(tout, int | float):
            return float(tin) * 1e6, float(tout) * 1e6
    return None


class Capabilities(BaseModel):
    """What a pool model can take, where LiteLLM's model information does not say (or errs)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    vision: bool | None = None
    tools: bool | None = None
    json_schema: bool | None = None
    max_input_tokens: int | None = Field(default=None, ge=1)


class ModelEndpoint(BaseModel):
    """One pool entry: a routable model name and how to call it through LiteLLM."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    litellm_model: str = Field(min_length=1)
    api_base: str | None = None
    api_key_env: str | None = None
    input_price_per_mtok: float | None = Field(default=None, ge=0)
    output_price_per_mtok: float | None = Field(default=None, ge=0)
    routes_as: str | None = Field(default=None, min_length=1)
    capabilities: Capabilities | None = None
    _price_source: Literal["pool", "litellm", "partial", "unknown"] = PrivateAttr(default="unknown")

    @field_validator("api_key_env")
    @classmethod
    def _variable_name(cls, value: str | None) -> str | None:
        # Never echo the value: someone may have pasted the key itself here.
        if value is not None and not _ENV_NAME.match(value):
            raise ValueError(
                "must be the NAME of an environment variable holding the key (e.g. "
                "OPENAI_API_KEY), not the key itself"
            )
        return value

    def model_post_init(self, _context: Any) -> None:
        """Fill missing prices from LiteLLM's price map and remember where prices came from."""
        if self.input_price_per_mtok is not None and self.output_price_per_mtok is not None:
            self._price_source = "pool"
            return
        found = lookup_price(self.litellm_model)
        if found is None:
            if self.input_price_per_mtok is not None or self.output_price_per_mtok is not None:
                self._price_source = "partial"  # one explicit price, the other unknown
            return
        # frozen model: set the computed defaults through object.__setattr__
        if self.input_price_per_mtok is None:
            object.__setattr__(self, "input_price_per_mtok", found[0])
        if self.output_price_per_mtok is None:
            object.__setattr__(self, "output_price_per_mtok", found[1])
        self._price_source = "litellm"

    @property
    def price_source(self) -> str:
        """``pool`` (explicit in the file), ``litellm`` (price map), ``partial`` (one of the
        two prices only) or ``unknown``."""
        return self._price_source

    @property
    def priced(self) -> bool:
        """Both prices known (a missing one never counts as $0)."""
        return self._price_source in ("pool", "litellm")

    @property
    def missing_prices(self) -> list[str]:
        """``input`` / ``output``: the prices this model lacks."""
        return [
            side
            for side, value in (
                ("input", self.input_price_per_mtok),
                ("output", self.output_price_per_mtok),
            )
            if value is None
        ]

    @property
    def prices(self) -> tuple[float, float] | None:
        """(input, output) USD per million tokens, or None unless both are known."""
        if not self.priced:
            return None
        return float(self.input_price_per_mtok), float(self.output_price_per_mtok)

    def cost(self, input_tokens: int, output_tokens: int) -> float | None:
        """USD for a call with these token counts; None when a price is unknown."""
        prices = self.prices
        if prices is None:
            return None
        return (input_tokens * prices[0] + output_tokens * prices[1]) / 1e6

    def api_key(self) -> str:
        """The key from ``api_key_env`` (read now, never stored), or a dummy when none is named."""
        if not self.api_key_env:
            return NO_KEY
        key = os.environ.get(self.api_key_env)
        if not key:
            raise MissingAPIKeyError(
                f"environment variable {self.api_key_env} (the API key of pool model "
                f"{self.name!r}) is not set"
            )
        return key


class Pool(BaseModel):
    """The models trouter may call; names are unique."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    models: list[ModelEndpoint] = Field(min_length=1)
    _source: str | None = PrivateAttr(default=None)

    @field_validator("models")
    @classmethod
    def _unique_names(cls, models: list[ModelEndpoint]) -> list[ModelEndpoint]:
        seen: set[str] = set()
        for model in models:
            if model.name in seen:
                raise ValueError(f"model name {model.name!r} appears more than once")
            seen.add(model.name)
        return models

    @property
    def source(self) -> str | None:
        """The file the pool was read from (for error messages)."""
        return self._source

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.models]

    def endpoint(self, name: str) -> ModelEndpoint:
        """The entry called ``name``; KeyError listing the pool's names otherwise."""
        for model in self.models:
            if model.name == name:
                return model
        where = f" in {self.source}" if self.source else ""
        raise KeyError(f"model {name!r} is not in the pool{where}; pool models: {self.names}")

    get = endpoint  # alias used by the synthesis commands

    def unpriced(self) -> dict[str, list[str]]:
        """{model: the prices it lacks} for every model whose cost cannot be computed."""
        return {m.name: m.missing_prices for m in self.models if m.missing_prices}

    def price_warnings(self) -> list[str]:
        """One line per model whose calls cannot be priced (its cost is unknown, not $0)."""
        where = f" in {self.source}" if self.source else ""
        return [
            f"pool model {name!r}{where} has no {' and no '.join(sides)} price "
            f"(input_price_per_mtok / output_price_per_mtok) and LiteLLM's price map does not "
            f"list {self.endpoint(name).litellm_model!r}: its cost is unknown, not $0; "
            "USD budgets leave it out and cost metrics do not count it"
            for name, sides in self.unpriced().items()
        ]

    def __contains__(self, name: object) -> bool:
        return any(m.name == name for m in self.models)

    @classmethod
    def openai_compatible(
        cls,
        names: list[str],
        api_base: str,
        api_key_env: str | None = None,
        input_price_per_mtok: float | None = None,
        output_price_per_mtok: float | None = None,
    ) -> Pool:
        """A pool of models served by one OpenAI-compatible server (vLLM, llama.cpp, a
        loopback stand-in), each called by its own name."""
        return cls(
            models=[
                ModelEndpoint(
                    name=name,
                    litellm_model=f"openai/{name}",
                    api_base=api_base,
                    api_key_env=api_key_env,
                    input_price_per_mtok=input_price_per_mtok,
                    output_price_per_mtok=output_price_per_mtok,
                )
                for name in names
            ]
        )

    def save(self, path: str | Path) -> Path:
        """Write the pool as the YAML :meth:`load` reads (prices as resolved)."""
        path = Path(path)
        document = {"models": [m.model_dump(exclude_none=True) for m in self.models]}
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        return path

    @classmethod
    def from_dict(cls, data: Any, source: str = "<pool>") -> Pool:
        """Validate a parsed pool document; errors name the source, the model and the field."""
        if not isinstance(data, dict):
            raise PoolConfigError(f"{source}: a pool file must be a mapping with a 'models' list")
        try:
            pool = cls.model_validate(data)
        except ValidationError as err:
            raise PoolConfigError(_describe(err, data, source)) from None
        pool._source = source
        return pool

    @classmethod
    def load(cls, path: str | Path) -> Pool:
        """Read and validate a pool YAML file."""
        from trouter.config import MalformedDataError
        from trouter.data.jsonl import read_text

        path = Path(path)
        try:
            text = read_text(path, "pool file", max_bytes=MAX_POOL_FILE_BYTES)  # also a device
        except MalformedDataError as err:
            raise PoolConfigError(str(err)) from None
        try:
            data = yaml.safe_load(text)
        except (yaml.YAMLError, RecursionError) as err:  # RecursionError: nested too deeply
            raise PoolConfigError(f"{path} is not valid YAML: {err}") from None
        return cls.from_dict(data, source=str(path))


def _describe(err: ValidationError, data: dict[str, Any], source: str) -> str:
    """One line per problem: ``file: model 'x' (models[2]): field 'y': message``."""
    lines = []
    models = data.get("models")
    for problem in err.errors():
        loc = list(problem["loc"])
        message = problem["msg"]
        if problem["type"] == "extra_forbidden":
            message = "unknown field"
        if len(loc) >= 2 and loc[0] == "models" and isinstance(loc[1], int):
            index = loc[1]
            entry = models[index] if isinstance(models, list) and index < len(models) else None
            name = entry.get("name") if isinstance(entry, dict) else None
            who = f"model {name!r} (models[{index}])" if name else f"models[{index}]"
            field = ".".join(str(p) for p in loc[2:])
            lines.append(f"{who}: field {field!r}: {message}" if field else f"{who}: {message}")
        else:
            field = ".".join(str(p) for p in loc) or "pool"
            lines.append(f"field {field!r}: {message}")
    return f"{source}: invalid pool: " + "; ".join(lines)
