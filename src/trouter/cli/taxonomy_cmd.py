"""``trouter taxonomy``: inspect a task taxonomy and see which leaves queries fall into."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.tree import Tree

from trouter.cli.errors import fail
from trouter.taxonomy.model import Taxonomy, TaxonomyError

taxonomy_app = typer.Typer(
    help="Inspect task taxonomies (the packaged default or a JSON file).",
    no_args_is_help=True,
)


def _load(file: Path | None) -> Taxonomy:
    """The taxonomy in ``file`` (the packaged default when None); exit 1 with the reason."""
    try:
        return Taxonomy.load(file) if file is not None else Taxonomy.default()
    except TaxonomyError as err:
        raise fail(str(err), 1) from None


def build_tree(taxonomy: Taxonomy, definitions: bool = False, depth: int = 4) -> Tree:
    """A Rich tree: domains, subcategories, difficulty levels (and preferences), down to
    ``depth`` levels (1 = domains only)."""
    leaves = len(taxonomy.leaves())
    root = Tree(f"[bold]{taxonomy.name}[/bold]  ({len(taxonomy.domains)} domains, {leaves} leaves)")
    styles = ("bold cyan", "green", "yellow", "magenta")

    def add(parent: Tree, node, level: int) -> None:
        label = f"[{styles[level]}]{node.name}[/{styles[level]}]"
        if definitions:
            label += f" [dim]- {node.definition}[/dim]"
        if level + 1 >= depth and node.children:
            label += f" [dim]({len(node.children)})[/dim]"
        branch = parent.add(label)
        if level + 1 >= depth:
            return
        for child in node.children:
            add(branch, child, level + 1)

    for domain in taxonomy.domains:
        add(root, domain, 0)
    return root


@taxonomy_app.command("show")
def show(
    file: Path | None = typer.Argument(
        None, help="Taxonomy JSON file; the packaged default taxonomy when omitted."
    ),
    leaves: bool = typer.Option(False, "--leaves", help="Print one leaf id per line instead."),
    definitions: bool = typer.Option(
        False, "--definitions", "-d", help="Show each node's one-sentence definition."
    ),
    depth: int = typer.Option(
        4, "--depth", min=1, max=4, help="Levels to show: 1 domains ... 4 preferences."
    ),
) -> None:
    """Print the taxonomy as a tree (or its leaf ids with --leaves)."""
    taxonomy = _load(file)
    if leaves:
        for leaf_id in taxonomy.leaf_ids():
            typer.echo(leaf_id)
        return
    Console().print(build_tree(taxonomy, definitions, depth))


@taxonomy_app.command("assign")
def assign(
    queries: list[str] = typer.Argument(..., help="Query texts to assign to leaves."),
    taxonomy_file: Path | None = typer.Option(
        None, "--taxonomy", "-t", help="Taxonomy JSON file (default: the packaged one)."
    ),
    top: int = typer.Option(3, "--top", min=1, help="How many leaves to show per query."),
    temperature: float = typer.Option(
        0.05, "--temperature", min=1e-6, help="Softmax temperature of the soft assignment."
    ),
) -> None:
    """Show the most likely task-type leaves of each query (embedding similarity)."""
    import numpy as np

    from trouter.taxonomy.assign import assign_leaves

    taxonomy = _load(taxonomy_file)
    ids = taxonomy.leaf_ids()
    weights = assign_leaves(taxonomy, queries, temperature=temperature)
    for query, row in zip(queries, weights, strict=True):
        shown = query if len(query) <= 80 else query[:77] + "..."
        typer.echo(shown.replace("\n", " "))
        for k in np.argsort(-row)[:top]:
            typer.echo(f"  {row[k]:.3f}  {ids[k]}")


def register(app: typer.Typer) -> None:
    """Add ``trouter taxonomy ...`` to the top-level app."""
    app.add_typer(taxonomy_app, name="taxonomy")


__all__ = ["build_tree", "register", "taxonomy_app"]
