"""`campaign-fsm`: the one command line. Each subcommand lives in its own module, named after it:
`run`, `config`, `send`, `schedule`, `replay`, `audit`, `simulate`, `demo` and `docs` (which also
registers `schema` and `diagram`, the two parts of what it writes that can be written alone).

A subcommand module exposes `register(subparsers)`, which adds its parser and sets
`func=<callable(args) -> int>` as the parser default. Adding a subcommand is one line in
`_SUBCOMMANDS`.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

__all__ = ["build_parser", "main"]

_SUBCOMMANDS: tuple[str, ...] = (
    "adapters.cli.docs",
    "adapters.cli.simulate",
    "adapters.cli.send",
    "adapters.cli.schedule",
    "adapters.cli.run",
    "adapters.cli.config",
    "adapters.cli.replay",
    "adapters.cli.audit",
    "adapters.cli.demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="campaign-fsm",
        description="Run outbound dialing campaigns' lifecycle from Kafka commands, through a formal "
        "state machine per campaign.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for module_name in _SUBCOMMANDS:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    return code
