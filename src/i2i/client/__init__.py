"""Python clients of an i2i server (contract 3): `Client` (sync) and `AsyncClient` (asyncio).

Imports only the generated protocol modules, grpc and numpy, so an application can use it
without torch or the rest of i2i::

    from i2i.client import Client

    with Client("localhost:8001") as client:
        result = client.translate(png_bytes, model="day2dusk", direction="A2B")
        open("dusk.png", "wb").write(result.images[0])

The names are imported on first use, so `python -m i2i.client.probe` (a container's
health check, run every few seconds) loads only grpc.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from i2i.client.aio import AsyncClient
    from i2i.client.client import Client
    from i2i.client.messages import (
        DEFAULT_TIMEOUT,
        Frame,
        Timing,
        TranslateError,
        TranslateResult,
    )

_WHERE = {
    "AsyncClient": "i2i.client.aio",
    "Client": "i2i.client.client",
    "DEFAULT_TIMEOUT": "i2i.client.messages",
    "Frame": "i2i.client.messages",
    "Timing": "i2i.client.messages",
    "TranslateError": "i2i.client.messages",
    "TranslateResult": "i2i.client.messages",
}

__all__ = [
    "DEFAULT_TIMEOUT",
    "AsyncClient",
    "Client",
    "Frame",
    "Timing",
    "TranslateError",
    "TranslateResult",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'i2i.client' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
