"""The `i2i-serve` command (also `i2i serve` and `python -m i2i.serving`).

It lives in the serving stage, not in `i2i.cli`, so that a server starts with nothing but
serving's own imports: no PyTorch, no other stage.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from i2i.repository import RepositoryError
from i2i.serving.config import ServerConfigError, add_arguments, config_from_args

DESCRIPTION = (
    "Serve a model repository over gRPC (i2i.v1.Translator, with grpc.health.v1 and "
    "reflection), batching requests dynamically, with Prometheus metrics on their own port. "
    "Health is NOT_SERVING until every model is loaded and warm; SIGTERM drains and exits 0."
)
EPILOG = "Documentation: docs/serving.md. Every command prints its own --help."


def add_command_arguments(parser: argparse.ArgumentParser) -> None:
    """The server's flags (each also an I2I_SERVE_<FLAG> environment variable)."""
    add_arguments(parser)


def run_command(args: argparse.Namespace) -> int:
    """Serve with the parsed flags; 2 with a one-line message for a bad setting."""
    from i2i.serving.server import run

    try:
        config = config_from_args(args)
    except (ServerConfigError, RepositoryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return run(config)


def main(argv: Sequence[str] | None = None) -> int:
    """The `i2i-serve` console script."""
    parser = argparse.ArgumentParser(prog="i2i-serve", description=DESCRIPTION, epilog=EPILOG)
    add_command_arguments(parser)
    try:
        return run_command(parser.parse_args(argv))
    except KeyboardInterrupt:
        print("aborted", file=sys.stderr)
        return 130
