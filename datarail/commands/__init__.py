"""Command groups of the ``datarail`` CLI that live beside their concern. Each module
defines click commands or groups; :func:`register` adds them to the main group."""

from __future__ import annotations

import importlib

import click

# One entry per module; each module exposes COMMANDS: list[click.Command].
MODULES = (
    "datarail.commands.tickets",
    "datarail.commands.warehouse_history",
    "datarail.commands.extraction",
)


def register(main: click.Group) -> None:
    for name in MODULES:
        for cmd in importlib.import_module(name).COMMANDS:
            main.add_command(cmd)
