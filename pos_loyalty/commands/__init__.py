"""Command-line extensions: one light module per area, each with ``register`` and ``run``.

A module here defines::

    COMMANDS: tuple[str, ...]                       # the top-level commands it owns
    def register(sub: argparse._SubParsersAction) -> None   # add its sub-parsers
    def run(args: argparse.Namespace, settings: Settings) -> int

It must import only the standard library at module level (the CLI starts fast and headless
commands never load the UI or hardware stacks); heavy imports go inside ``run``.
"""

from __future__ import annotations

EXTENSIONS = (
    "pos_loyalty.commands.devices",  # card readers (drivers/)
    "pos_loyalty.commands.sync",  # sync service, central server, pairing
    "pos_loyalty.commands.terminal",  # the Textual cashier terminal
)
