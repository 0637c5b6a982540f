"""The docs keep up with the code: docs/api.md describes every public name,
and the README's command list names every command the CLI has."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import click

import walq
from walq.cli import main

ROOT = Path(__file__).resolve().parents[1]


def public_members(cls) -> list[str]:
    return [n for n, v in vars(cls).items() if not n.startswith("_") and (callable(v) or isinstance(v, property))]


def test_api_reference_describes_every_public_name():
    text = (ROOT / "docs" / "api.md").read_text()
    missing = [n for n in walq.__all__ if not re.search(rf"\b{n}\b", text)]
    assert not missing, f"docs/api.md does not mention {missing}"
    for cls in (walq.Broker, walq.Queue, walq.Message):
        for name in public_members(cls):
            if name in ("with_changes",):
                continue
            assert re.search(rf"\.{name}\b|`{name}`", text), f"docs/api.md does not mention {cls.__name__}.{name}"
    for name, p in inspect.signature(walq.Broker.create_queue).parameters.items():
        if name not in ("self", "name"):
            assert f"`{name}`" in text, f"docs/api.md does not describe create_queue's {name}"


def test_readme_points_at_the_api_reference_not_a_missing_file():
    text = (ROOT / "README.md").read_text()
    assert "docs/api.md" in text and "API.md" not in text.replace("docs/api.md", "")


def test_readme_command_list_names_every_command():
    text = (ROOT / "README.md").read_text()
    block = text.split("## Command line", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    listed = {" ".join(line.split()[1:3]) for line in block.splitlines() if line.startswith("walq ")}
    listed |= {line.split()[1] for line in block.splitlines() if line.startswith("walq ")}
    commands = []
    for name, cmd in main.commands.items():
        if isinstance(cmd, click.Group):
            commands += [f"{name} {sub}" for sub in cmd.commands]
        else:
            commands.append(name)
    missing = [c for c in commands if c not in listed]
    assert not missing, f"README's command list misses {missing}"
