"""`i2i serve`: the same command as `i2i-serve`, which lives in the serving stage."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from i2i.cli.common import EPILOG


def run_serve(args: argparse.Namespace) -> int:
    from i2i.serving.command import run_command

    return run_command(args)


def serve_main(argv: Sequence[str] | None = None) -> int:
    """`i2i-serve`, for callers that reach it through `i2i.cli`."""
    from i2i.serving.command import main

    return main(argv)


def add_commands(sub: Any) -> None:
    """Register serve on the `i2i` parser's subcommands."""
    from i2i.serving.command import DESCRIPTION, add_command_arguments

    p = sub.add_parser(
        "serve",
        help="serve a model repository over gRPC (same as i2i-serve)",
        description=DESCRIPTION,
        epilog=EPILOG,
    )
    add_command_arguments(p)
    p.set_defaults(func=run_serve)
