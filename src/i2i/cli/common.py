"""What every command shares: errors, logging, dispatch and the missing-extra message."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence


class UsageError(Exception):
    """A command line that cannot work as given (a missing or contradictory flag)."""


EPILOG = "Documentation: README.md. Every command prints its own --help."

# Modules an extra brings, by the extra that brings them (pyproject.toml). A command whose
# stage needs one of them says which extra to install instead of a traceback.
_EXTRA_MODULES = {
    "train": ("torch", "yaml", "tensorboard", "skimage", "torchmetrics"),
    "export": ("torch", "onnx", "onnxscript", "onnxconverter_common"),
}

# (module, error class) pairs that mean bad input. Looked up only in modules already
# imported: an error can come only from a module that was loaded, and importing the rest
# would pull PyTorch into commands that must run without it (i2i-serve, i2i translate).
_USER_ERRORS = (
    ("i2i.cli.common", "UsageError"),
    ("i2i.checkpoint", "CheckpointError"),
    ("i2i.training.config", "ConfigError"),
    ("i2i.training.loop", "ResumeError"),
    ("i2i.data.folders", "DataError"),
    ("i2i.export.errors", "ExportError"),
    ("i2i.importers.cyclegan", "ImportError_"),
    ("i2i.repository", "RepositoryError"),
    ("i2i.serving.config", "ServerConfigError"),
)


def configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not verbose:
        quiet_exporter_logs()


def quiet_exporter_logs() -> None:
    """The ONNX exporter narrates every graph pass; keep the user's screen for i2i.

    Called again after torch is imported, because importing torch resets its loggers.
    """
    import warnings

    for name in ("onnx_ir", "onnxscript", "torch.onnx", "torch._dynamo", "torch.export"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)`")


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean bad input (a flag, a file, a folder): a message, exit 2, no traceback."""
    found: list[type[BaseException]] = [FileNotFoundError]
    for module, name in _USER_ERRORS:
        loaded = sys.modules.get(module)
        if loaded is not None and hasattr(loaded, name):
            found.append(getattr(loaded, name))
    return tuple(found)


def missing_extra(exc: ModuleNotFoundError, extras: Sequence[str]) -> str | None:
    """One line naming the extra to install, if `exc` is a module one of `extras` brings."""
    top = (exc.name or "").split(".")[0]
    for extra in extras:
        if top in _EXTRA_MODULES.get(extra, ()):
            wanted = ",".join(extras)
            return (
                f"this command needs the '{wanted}' extra (module {top!r} is not installed): "
                f"pip install 'i2i[{wanted}]'"
            )
    return None


def dispatch(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse `argv`, run the chosen command, turn known errors into a message and exit code.

    A command is a `func` default on its parser; an `extras` default names the extras its
    stage needs (for the one-line message when they are not installed).
    """
    args = parser.parse_args(argv)
    configure_logging(getattr(args, "verbose", False))
    try:
        return int(args.func(args))
    except ModuleNotFoundError as exc:
        message = missing_extra(exc, getattr(args, "extras", ()))
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("aborted", file=sys.stderr)
        return 130
    except Exception as exc:
        if not isinstance(exc, user_errors()):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
