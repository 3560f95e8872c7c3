"""Parsing shared by the commands' options."""

from __future__ import annotations


def comma_list(text: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``: the items of a comma-separated option."""
    return [item.strip() for item in text.split(",") if item.strip()]
