"""The error export raises when an artifact cannot be produced or fails its checks."""

from __future__ import annotations


class ExportError(ValueError):
    """An export produced no artifact, or one that must not be used (the message says why)."""
