"""The `i2i` command: one subcommand per stage, each defined in its own module."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from i2i.cli import demo, export, models, serve, train, translate
from i2i.cli.common import EPILOG, dispatch


def build_parser() -> argparse.ArgumentParser:
    """The `i2i` parser. Building it imports no stage (no PyTorch): commands import lazily."""
    parser = argparse.ArgumentParser(
        prog="i2i",
        description="Image-to-image translation GANs: sample data, training, evaluation, "
        "import, export, serving and translation.",
        epilog=EPILOG,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (train, export, models, serve, translate, demo):
        group.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The `i2i` console script."""
    return dispatch(build_parser(), argv)
