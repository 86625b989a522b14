"""The README's command table names every command the `suanli` CLI has, and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

import typer

from suanli.cli import app

README = Path(__file__).resolve().parents[2] / "README.md"


def _cli_commands(group: typer.Typer, prefix: str = "") -> set[str]:
    """Full command paths ("admin token create") of a Typer app, groups expanded."""
    names = set()
    command = typer.main.get_command(group)
    stack = [(prefix, command)]
    while stack:
        path, current = stack.pop()
        children = getattr(current, "commands", None)
        if not children:
            names.add(path.strip())
            continue
        for name, child in children.items():
            stack.append((f"{path} {name}", child))
    return names


def _readme_command_cells() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Command line", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `suanli")]
    return [re.split(r"(?<!\\)\|", row)[1] for row in rows]  # cells split on unescaped |


def _documented() -> set[str]:
    """Command paths the table names: the lower-case words after `suanli`, up to the arguments."""
    cells = " ".join(_readme_command_cells())
    return set(re.findall(r"`suanli ([a-z][a-z -]*?)(?= [\[\-A-Z(]|`)", cells))


def test_every_cli_command_is_in_the_readme_table() -> None:
    documented = _documented()
    missing = {
        name
        for name in _cli_commands(app)
        if not any(doc == name or doc.startswith(name + " ") for doc in documented)
    }
    assert not missing, f"README command table lacks: {sorted(missing)}"


def test_the_readme_table_names_no_command_the_cli_lacks() -> None:
    commands = _cli_commands(app)
    documented = _documented()
    unknown = {
        doc
        for doc in documented
        if not any(doc == name or doc.startswith(name + " ") for name in commands)
    }
    assert not unknown, f"README documents commands the CLI lacks: {sorted(unknown)}"
