"""Print the reference tables of docs/cli.md and docs/pool-file.md from the code itself.

``cli``: every command of ``trouter`` with its help text and options, read from the Click
command tree that Typer builds (hidden commands and options left out).
``pool``: the fields of a pool file, read from the pydantic models in ``trouter.llm.pool``
(type, default, whether required); the description is the field's own, else the one below.

Usage: python scripts/reference_docs.py cli|pool
(scripts/docs_tables.py writes the output into the docs and checks it is current)
"""

from __future__ import annotations

import enum
import inspect
import sys
import typing
from pathlib import Path
from typing import Any

#: Descriptions of pool fields that do not carry one in the code.
POOL_FIELD_HELP = {
    "name": "The name routers, labelled files and requests use for this model. Unique in the pool.",
    "litellm_model": "What LiteLLM is asked for, with its provider prefix: `openai/gpt-4o-mini`, "
    "`anthropic/claude-3-5-haiku-20241022`, `openai/<name>` for any OpenAI-compatible server.",
    "api_base": "Base URL of a self-hosted or local OpenAI-compatible server "
    "(`http://127.0.0.1:8000/v1`).",
    "api_key_env": "The NAME of the environment variable that holds the key (read at call "
    "time, never stored or logged). A value that looks like a key is refused.",
    "input_price_per_mtok": "USD per million input tokens. When absent, LiteLLM's bundled "
    "price map is used.",
    "output_price_per_mtok": "USD per million output tokens. When absent, LiteLLM's bundled "
    "price map is used.",
    "models": "The pool's models (at least one); each entry is described below.",
    "routes_as": "The model of a trained router that this one stands in for: a router "
    "trained on a public suite routes a current pool through it (`routes_as: "
    "gpt-4-1106-preview`). Requests and metrics still name this model.",
    "capabilities": "What the model can take, where LiteLLM's model information does not say "
    "or is wrong. A model that cannot take a request is never chosen for it.",
    "vision": "Accepts image parts.",
    "tools": "Accepts tool definitions and tool calls.",
    "json_schema": "Honours `response_format` with a JSON schema.",
    "max_input_tokens": "The longest prompt it accepts, in tokens.",
}


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _type_name(annotation: object) -> str:
    text = inspect.formatannotation(annotation)
    return text.replace("typing.", "").replace("NoneType", "None")


def _default(value: object) -> str:
    if value is None or value in ((), [], "") or value is inspect.Parameter.empty:
        return ""
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"`{value}`"


def _is_argument(param: Any) -> bool:
    return param.param_type_name == "argument"


def _type_label(param: Any, ctx: Any) -> str:
    """The value type as --help shows it (Typer's own parameters, or Click's)."""
    if hasattr(param, "display_type"):
        return str(param.display_type(ctx)).strip("<>")
    return str(param.type.name).lower()


def _option_row(param: Any, ctx: Any) -> str:
    if _is_argument(param):
        name = f"`{(param.metavar or param.name or '').upper()}`"
        kind = _type_label(param, ctx) + " argument" + ("" if param.required else ", optional")
    else:
        names = [*param.opts, *param.secondary_opts]
        name = " / ".join(f"`{n}`" for n in names)
        kind = "flag" if getattr(param, "is_flag", False) else _type_label(param, ctx)
    default = param.default
    if getattr(param, "is_flag", False):
        default = bool(default)
    help_text = _cell(getattr(param, "help", None) or "")
    if param.required and not _is_argument(param):
        help_text = f"**required.** {help_text}"
    return f"| {name} | {_cell(kind)} | {_default(default)} | {help_text} |"


def _subcommands(command: Any) -> list[tuple[str, Any]]:
    """(name, command) of a group's visible subcommands; [] for a plain command.

    Typer may carry its own copy of Click, so groups are recognised by their methods.
    """
    if not hasattr(command, "list_commands"):
        return []
    ctx = command.context_class(command)
    subs = [(name, command.get_command(ctx, name)) for name in command.list_commands(ctx)]
    return [(name, sub) for name, sub in subs if sub is not None and not sub.hidden]


def _walk(command: Any, path: list[str]) -> typing.Iterator[tuple[list[str], Any]]:
    yield path, command
    for name, sub in _subcommands(command):
        yield from _walk(sub, [*path, name])


def cli_reference() -> str:
    import typer

    from trouter.cli import app

    root = typer.main.get_command(app)
    lines: list[str] = []
    for path, command in _walk(root, ["trouter"]):
        title = " ".join(path)
        lines += [f"### `{title}`", ""]
        help_text = inspect.cleandoc(command.help or "").replace("\b\n", "")
        if help_text:
            lines += [help_text, ""]
        subs = _subcommands(command)
        if subs:
            lines += ["Commands: " + ", ".join(f"`{title} {n}`" for n, _ in subs) + ".", ""]
            continue
        params = [p for p in command.params if not getattr(p, "hidden", False)]
        if params:
            lines += ["| option | type | default | description |", "|---|---|---|---|"]
            ctx = command.context_class(command, info_name=path[-1])
            lines += [_option_row(p, ctx) for p in params]
            lines.append("")
    return "\n".join(lines)


def _nested_models(annotation: object) -> list[type]:
    """The pydantic models an annotation refers to (``Capabilities | None`` -> Capabilities)."""
    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _nested_models(arg)]


def pool_reference() -> str:
    from trouter.llm.pool import Pool

    lines: list[str] = []
    queue: list[tuple[type, str]] = [(Pool, "The file")]
    seen: set[type] = set()
    while queue:
        model, title = queue.pop(0)
        if model in seen:
            continue
        seen.add(model)
        lines += [
            f"**{title}**",
            "",
            "| field | type | default | description |",
            "|---|---|---|---|",
        ]
        for name, field in model.model_fields.items():
            default = "required" if field.is_required() else _default(field.default) or "none"
            described = field.description or POOL_FIELD_HELP.get(name) or "**undocumented**"
            kind = _cell(_type_name(field.annotation).replace("trouter.llm.pool.", ""))
            lines.append(f"| `{name}` | `{kind}` | {default} | {_cell(described)} |")
            queue += [(m, f"`{name}` ({m.__name__})") for m in _nested_models(field.annotation)]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if argv == ["cli"]:
        print(cli_reference())
    elif argv == ["pool"]:
        print(pool_reference())
    else:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
