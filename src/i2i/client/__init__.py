"""Python clients of an i2i server (contract 3): `Client` (sync) and `AsyncClient` (asyncio).

Imports only the generated protocol modules, grpc and numpy, so an application can use it
without torch or the rest of i2i::

    from i2i.client import Client

    with Client("localhost:50051") as client:
        result = client.translate(png_bytes, model="day2dusk", direction="A2B")
        open("dusk.png", "wb").write(result.images[0])
"""

from i2i.client.aio import AsyncClient
from i2i.client.client import Client
from i2i.client.messages import DEFAULT_TIMEOUT, Frame, Timing, TranslateError, TranslateResult

__all__ = [
    "DEFAULT_TIMEOUT",
    "AsyncClient",
    "Client",
    "Frame",
    "Timing",
    "TranslateError",
    "TranslateResult",
]
