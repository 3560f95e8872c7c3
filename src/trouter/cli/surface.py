"""What every command's help looks like: ``-h``, an example per command, flags shown as flags.

:class:`TrouterGroup` is the root command group. When typer has built the command tree it
walks it once and, for every command and group,

- adds the example from :data:`EXAMPLES` as the help's epilog (unless the command already
  has one, or carries ``Example:`` in its own docstring);
- shows boolean flags without a value placeholder: typer's rich help prints ``<bool>``
  beside every flag (``--dry-run <bool>``), as if it took a value. An empty metavar is what
  typer's renderer shows instead of the type; a flag's metavar is used nowhere else.
"""

from __future__ import annotations

import re
from typing import Any

from trouter.cli.errors import ExpectedErrorsGroup

HELP_OPTION_NAMES = ["-h", "--help"]

#: One or two typical invocations per command path ("" is the root), shown under its help.
EXAMPLES: dict[str, tuple[str, ...]] = {
    "": ("trouter quickstart", "trouter eval --suite routerbench --routers knn,trouter"),
    "quickstart": ("trouter quickstart --out runs/quickstart",),
    "eval": (
        "trouter eval --suite routerbench --routers knn,trouter --seeds 3",
        "trouter eval --suite routerbench --setting cold-start --scenario 0.7:-0.3",
    ),
    "train": ("trouter train --suite routerbench --out router",),
    "label": ("trouter label --questions qa.jsonl --pool pool.yaml --out labelled.jsonl",),
    "routers": ("trouter routers",),
    "serve": ("trouter serve --model-dir router --pool pool.yaml --port 8000",),
    "keys": ("trouter keys add alice --file keys.yaml",),
    "keys add": ("trouter keys add alice --file keys.yaml",),
    "data": ("trouter data fetch routerbench", "trouter data list"),
    "data fetch": ("trouter data fetch routerbench", "trouter data fetch --all"),
    "data list": ("trouter data list",),
    "taxonomy": ("trouter taxonomy show --leaves",),
    "taxonomy show": ("trouter taxonomy show --depth 2", "trouter taxonomy show my.json --leaves"),
    "taxonomy assign": ('trouter taxonomy assign "Sort a list in Python" --top 2',),
    "synth": ("trouter synth qa --taxonomy default --pool pool.yaml --out qa.jsonl",),
    "synth taxonomy": (
        'trouter synth taxonomy --pool pool.yaml --out taxonomy.json --domain "Law: legal '
        'questions" --dry-run',
    ),
    "synth qa": (
        "trouter synth qa --taxonomy default --pool pool.yaml --out qa.jsonl --per-leaf 10",
    ),
    "models": ("trouter models fetch", "trouter models serve --pool-out pool.local.yaml"),
    "models list": ("trouter models list",),
    "models fetch": ("trouter models fetch smollm2-135m-instruct",),
    "models serve": ("trouter models serve smollm2-135m-instruct --pool-out pool.local.yaml",),
    "experiment": ("trouter experiment local-cold-start --size tiny",),
    "experiment local-cold-start": ("trouter experiment local-cold-start --size full",),
    "experiment local-pool": ("trouter experiment local-pool eval --seeds 3",),
    "feedback": ("trouter feedback import grades.jsonl --store sqlite:///proxy.db",),
    "feedback import": ("trouter feedback import grades.jsonl --store sqlite:///proxy.db",),
    "feedback import-labels": (
        "trouter feedback import-labels labelled.jsonl --store sqlite:///proxy.db",
    ),
    "report": ("trouter report traffic --store sqlite:///proxy.db --since 24h",),
    "report traffic": ("trouter report traffic --store sqlite:///proxy.db --since 24h --json",),
}


def example_epilog(lines: tuple[str, ...]) -> str:
    """The epilog text: rich help keeps lines apart only across blank lines."""
    return "\n\n".join(["Example:" if len(lines) == 1 else "Examples:", *lines])


def _has_example(command: Any) -> bool:
    return "Example" in (command.epilog or "") or "Example:" in (command.help or "")


def _plain_flags(command: Any) -> None:
    # duck-typed: typer ships its own copy of click, whose classes are not click's
    for param in command.params:
        if getattr(param, "is_flag", False):
            param.metavar = ""
    context = command.context_class(command, help_option_names=HELP_OPTION_NAMES)
    help_option = command.get_help_option(context)  # built once, then cached by click
    if help_option is not None:
        help_option.metavar = ""


def polish(command: Any, path: str = "") -> None:
    """Examples and plain flags for ``command`` and everything under it."""
    if path in EXAMPLES and not _has_example(command):
        command.epilog = example_epilog(EXAMPLES[path])
    _plain_flags(command)
    for name, sub in getattr(command, "commands", {}).items():
        polish(sub, f"{path} {name}".strip())


class TrouterGroup(ExpectedErrorsGroup):
    """The root group: expected errors exit 2 (see :mod:`trouter.cli.errors`), and the
    help of every command is polished once the tree is built."""

    _polished = False

    def main(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if not self._polished:  # typer adds some root options after building the group
            polish(self)
            self._polished = True
        return super().main(*args, **kwargs)


_ROLE = re.compile(r":[a-z]+(?::[a-z]+)?:`~?([^`<]+?)(?:\s*<[^>]*>)?`")
_LITERAL = re.compile(r"``([^`]+)``")
_EMPHASIS = re.compile(r"\*{1,2}([^*]+)\*{1,2}")
#: A full stop that ends a sentence: not one inside "e.g." / "i.e." / "vs." / a number.
_SENTENCE_END = re.compile(r"(?<!\be\.g)(?<!\bi\.e)(?<!\bvs)(?<!\d)[.!?](?=\s|$)")


def first_sentence(docstring: str | None) -> str:
    """The first full sentence of a docstring's first paragraph, Sphinx/reST markup removed."""
    paragraph = (docstring or "").strip().split("\n\n", 1)[0]
    text = " ".join(paragraph.split())
    text = _ROLE.sub(lambda m: m.group(1).rsplit(".", 1)[-1], text)
    text = _EMPHASIS.sub(r"\1", _LITERAL.sub(r"\1", text))
    end = _SENTENCE_END.search(text)
    return text[: end.end()] if end else text
