"""Serving fixtures: a tiny CycleGAN exported once per session into a model repository."""

from __future__ import annotations

import asyncio
import io
import subprocess
import threading
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from i2i.serving.config import ServerConfig
from i2i.v1 import translator_pb2_grpc as pb_grpc

MODEL = "tiny"


class RunningServer:
    """An `i2i.serving.Server` on 127.0.0.1, its event loop in a background thread."""

    def __init__(self, config: ServerConfig) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        from i2i.serving.server import Server  # imported here: the fixtures above need less

        self.server = Server(config)
        self.call(self.server.start())
        self.target = f"127.0.0.1:{self.server.port}"

    def call(self, coroutine: Any, timeout: float = 120) -> Any:
        """Run a coroutine on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def channel(self, **options: Any) -> grpc.Channel:
        return grpc.insecure_channel(self.target, options=list(options.items()))

    def stub(self) -> pb_grpc.TranslatorStub:
        return pb_grpc.TranslatorStub(self.channel())

    def health(self, service: str = "") -> str:
        with self.channel() as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=10
            )
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

    def metrics(self) -> dict[str, float]:
        """Every sample of the server's metrics, keyed ``name{label="v",...}`` (sorted labels)."""
        text = self.server.metrics.exposition().decode()
        samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                samples[f"{sample.name}{{{labels}}}"] = sample.value
        return samples

    def close(self) -> None:
        try:
            self.call(self.server.stop(grace=5))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


def server_config(repository: Path, **changes: Any) -> ServerConfig:
    """Test settings: loopback, any free port, no metrics port, small warm-up."""
    settings: dict[str, Any] = {
        "repository": repository,
        "host": "127.0.0.1",
        "port": 0,
        "metrics_port": None,
        "warmup_size": 32,
        "max_batch": 4,
        "max_delay_ms": 2.0,
        "workers": 2,
        "threads": 1,
        "grace_seconds": 5.0,
        "drain_delay_s": 0.0,  # the tests that need a drain delay set one
    }
    settings.update(changes)
    return ServerConfig(**settings)


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def sample_image(height: int = 32, width: int = 32, seed: int = 0) -> np.ndarray:
    """A smooth random RGB image (gradients plus noise), uint8 (H, W, 3)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([(a * xx / width + b * yy / height) for a, b in rng.uniform(-1, 1, (3, 2))], -1)
    noisy = 128 + 90 * base + rng.normal(0, 12, (height, width, 3))
    return np.clip(noisy, 0, 255).astype(np.uint8)


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)
