"""The server's Prometheus metrics, named after Triton's (`nv_*` → `i2i_*`), in one registry.

Each `ServerMetrics` owns its own `CollectorRegistry` so that several servers can live in one
process (tests do) and read exact values. The names follow Prometheus conventions rather
than Triton's: seconds, `_total` counters, and histograms instead of cumulative
microsecond counters. Triton counterparts:

=========================================  ===========================================
i2i                                        Triton
=========================================  ===========================================
i2i_inference_requests_total{code}         nv_inference_request_success / _failure
i2i_inference_images_total                 nv_inference_count
i2i_inference_exec_total                   nv_inference_exec_count
i2i_inference_queue_duration_seconds       nv_inference_queue_duration_us
i2i_inference_compute_duration_seconds     nv_inference_compute_infer_duration_us
i2i_inference_request_duration_seconds     nv_inference_request_duration_us
i2i_inference_pending_requests             nv_inference_pending_request_count
i2i_gpu_utilization_ratio                  nv_gpu_utilization (0.0 to 1.0)
i2i_gpu_memory_used_bytes / _total_bytes   nv_gpu_memory_used_bytes / _total_bytes
=========================================  ===========================================

GPU gauges come from NVML (package nvidia-ml-py, module `pynvml`), read at scrape time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from types import ModuleType
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

# From half a millisecond (a tiny model on a CPU) to ten seconds (a large batch on a slow GPU).
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
BATCH_SIZE_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128)

_ROUTE = ("model", "direction")
_MODEL = ("model", "version", "direction")


class MetricsServer:
    """The HTTP endpoint Prometheus scrapes (`/metrics`), served from a daemon thread."""

    def __init__(self, httpd: WSGIServer, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread
        self.port: int = httpd.server_port

    def close(self) -> None:
        """Stop serving and free the port; safe to call twice."""
        if self._thread.is_alive():
            self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


class GpuCollector(Collector):
    """NVML gauges (utilisation, memory used and total) for some GPUs, read at each scrape.

    A GPU that NVML cannot read at the moment is left out of that scrape (and logged),
    so a flaky driver never breaks the rest of `/metrics`.

    Args:
        nvml: The `pynvml` module, already initialised with `nvmlInit()`; tests pass a
            small stand-in here because no GPU exists where they run.
        device_ids: NVML indices of the GPUs to report.
    """

    def __init__(self, nvml: Any, device_ids: Sequence[int]) -> None:
        self._nvml = nvml
        self._device_ids = list(device_ids)

    def collect(self) -> Iterable[Metric]:
        labels = ["gpu", "uuid", "name"]
        utilization = GaugeMetricFamily(
            "i2i_gpu_utilization_ratio",
            "GPU busy time over NVML's last sample period, from 0 to 1 (Triton: nv_gpu_utilization).",
            labels=labels,
        )
        used = GaugeMetricFamily(
            "i2i_gpu_memory_used_bytes",
            "GPU memory in use, by every process (Triton: nv_gpu_memory_used_bytes).",
            labels=labels,
        )
        total = GaugeMetricFamily(
            "i2i_gpu_memory_total_bytes",
            "GPU memory installed (Triton: nv_gpu_memory_total_bytes).",
            labels=labels,
        )
        for index in self._device_ids:
            try:
                handle = self._nvml.nvmlDeviceGetHandleByIndex(index)
                values = [str(index), _text(self._nvml.nvmlDeviceGetUUID(handle))]
                values.append(_text(self._nvml.nvmlDeviceGetName(handle)))
                memory = self._nvml.nvmlDeviceGetMemoryInfo(handle)
                busy = self._nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0
            except Exception as error:  # NVMLError and anything odd from a driver: skip it
                logger.warning(
                    "NVML could not read GPU %d, left out of this scrape: %s", index, error
                )
                continue
            utilization.add_metric(values, busy)
            used.add_metric(values, float(memory.used))
            total.add_metric(values, float(memory.total))
        return [utilization, used, total]


def _text(value: str | bytes) -> str:
    """NVML strings: `bytes` from older pynvml, `str` from newer."""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def open_nvml(device_id: int, *, required: bool) -> ModuleType | None:
    """`pynvml`, initialised, if it imports and GPU `device_id` exists; else None or an error.

    Args:
        device_id: The NVML index the server runs on.
        required: Raise `RuntimeError` (saying what to install or check) instead of
            returning None.
    """
    try:
        import pynvml
    except ImportError as error:
        if required:
            raise RuntimeError(
                "GPU metrics need NVML's Python bindings: pip install nvidia-ml-py"
            ) from error
        logger.info("no GPU metrics: the nvidia-ml-py package (module pynvml) is not installed")
        return None
    try:
        pynvml.nvmlInit()
    except Exception as error:
        if required:
            raise RuntimeError(
                f"GPU metrics: NVML did not start ({error}); is the NVIDIA driver loaded?"
            ) from error
        logger.info("no GPU metrics: NVML did not start (%s)", error)
        return None
    try:
        count = pynvml.nvmlDeviceGetCount()
    except Exception as error:
        count, reason = 0, str(error)
    else:
        reason = f"NVML sees {count} GPU(s)"
    if device_id < count:
        return pynvml
    pynvml.nvmlShutdown()
    if required:
        raise RuntimeError(f"GPU metrics: no GPU with index {device_id} ({reason})")
    logger.info("no GPU metrics: no GPU with index %d (%s)", device_id, reason)
    return None


class ServerMetrics:
    """Every metric the server exports, registered on one registry.

    Args:
        registry: Where to register; by default a new registry that also carries the
            process, platform and garbage-collector metrics.
        gpu: Export NVML gauges: None decides by whether `pynvml` imports and the GPU is
            there; True raises `RuntimeError` when not; False never exports them.
        device_id: NVML index of the GPU this server runs on.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        gpu: bool | None = None,
        device_id: int = 0,
    ) -> None:
        if registry is None:
            registry = CollectorRegistry()
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)
        self.registry = registry

        def counter(name: str, text: str, labels: Sequence[str] = _ROUTE) -> Counter:
            return Counter(name, text, labels, registry=registry)

        def histogram(
            name: str, text: str, buckets: Sequence[float] = LATENCY_BUCKETS
        ) -> Histogram:
            return Histogram(name, text, _ROUTE, buckets=buckets, registry=registry)

        def gauge(name: str, text: str, labels: Sequence[str] = ()) -> Gauge:
            return Gauge(name, text, labels, registry=registry)

        self._requests = counter(
            "i2i_inference_requests",
            "Translate and ModelInfer (KServe v2) calls answered, by gRPC status code.",
            [*_ROUTE, "code"],
        )
        self._request_seconds = histogram(
            "i2i_inference_request_duration_seconds",
            "Time from receiving a Translate or ModelInfer call to its reply, whatever the status code.",
        )
        self._images = counter(
            "i2i_inference_images", "Images translated, counted for calls answered OK only."
        )
        self._queue_seconds = histogram(
            "i2i_inference_queue_duration_seconds", "Time a request waited in the batcher's queue."
        )
        self._compute_seconds = histogram(
            "i2i_inference_compute_duration_seconds", "Time the backend took to run one batch."
        )
        self._batch_size = histogram(
            "i2i_inference_batch_size", "Images per batch the backend ran.", BATCH_SIZE_BUCKETS
        )
        self._exec = counter("i2i_inference_exec", "Batches the backend ran, failed ones included.")
        self._exec_failures = counter(
            "i2i_inference_exec_failures", "Batches the backend failed (all their requests fail)."
        )
        self._expired = counter(
            "i2i_inference_expired",
            "Requests dropped before compute: deadline passed or caller cancelled.",
        )
        self._pending = gauge(
            "i2i_inference_pending_requests", "Requests waiting in the batcher's queue.", _ROUTE
        )
        self._in_flight = gauge(
            "i2i_inference_in_flight_requests",
            "Translate and ModelInfer calls being handled right now.",
        )
        self._load_seconds = gauge(
            "i2i_model_load_duration_seconds",
            "Time it took to load and warm a model direction.",
            [*_MODEL, "backend"],
        )
        self._model_info = gauge(
            "i2i_model_info",
            "Always 1: the backend and artifact serving each loaded model direction.",
            [*_MODEL, "backend", "artifact"],
        )
        self._ready = gauge(
            "i2i_server_ready", "1 once every model is loaded and warm (health SERVING), else 0."
        )
        # (model, version, direction) -> the label values last set on the per-load gauges.
        self._loaded: dict[tuple[str, str, str], tuple[str, str]] = {}
        self._nvml: ModuleType | None = None
        self._gpu_collector: GpuCollector | None = None
        if gpu is not False:
            self._nvml = open_nvml(device_id, required=gpu is True)
        if self._nvml is not None:
            self._gpu_collector = GpuCollector(self._nvml, [device_id])
            registry.register(self._gpu_collector)

    @property
    def gpu(self) -> bool:
        """Whether NVML gauges are exported."""
        return self._nvml is not None

    def request_done(
        self, model: str, direction: str, code: str, total_s: float, images: int
    ) -> None:
        """One Translate or ModelInfer call answered (a stream's frame or request is one call).

        Args:
            model: Model name.
            direction: Direction name, e.g. "A2B".
            code: gRPC status code name, e.g. "OK" or "INVALID_ARGUMENT".
            total_s: Seconds from receipt to reply; observed whatever the code.
            images: Images in the request; added to the image count only when OK.
        """
        self._requests.labels(model, direction, code).inc()
        self._request_seconds.labels(model, direction).observe(total_s)
        if code == "OK":
            self._images.labels(model, direction).inc(images)

    def queued(self, model: str, direction: str, queue_s: float) -> None:
        """A request left the queue for a batch after waiting `queue_s` seconds."""
        self._queue_seconds.labels(model, direction).observe(queue_s)

    def batch_done(
        self, model: str, direction: str, size: int, compute_s: float, failed: bool
    ) -> None:
        """The backend ran (or failed) a batch of `size` images in `compute_s` seconds."""
        self._compute_seconds.labels(model, direction).observe(compute_s)
        self._batch_size.labels(model, direction).observe(size)
        self._exec.labels(model, direction).inc()
        if failed:
            self._exec_failures.labels(model, direction).inc()

    def expired(self, model: str, direction: str, count: int) -> None:
        """`count` requests were dropped before compute (deadline passed or caller gone)."""
        self._expired.labels(model, direction).inc(count)

    def watch_queue_depth(self, model: str, direction: str, read: Callable[[], int]) -> None:
        """Read a batcher's queue depth from `read` at every scrape (always current), under
        the direction it batches (``conditional`` for a multi-domain model's shared one)."""
        self._pending.labels(model, direction).set_function(read)

    def watch_in_flight(self, read: Callable[[], int]) -> None:
        """Read the number of calls being handled from `read` at every scrape."""
        self._in_flight.set_function(read)

    def model_loaded(
        self,
        model: str,
        version: int,
        direction: str,
        backend: str,
        seconds: float,
        *,
        artifact: str = "",
    ) -> None:
        """A model direction is loaded and warm; earlier series for it are replaced.

        Also starts its request counters at zero, so `rate()` works from the first request.

        Args:
            model: Model name.
            version: Model version.
            direction: Direction name.
            backend: What runs it, e.g. "onnxruntime-cpu" or "tensorrt".
            seconds: Load and warm-up time.
            artifact: The artifact file it runs, e.g. "A2B.onnx".
        """
        self.model_unloaded(model, version, direction)
        key = (model, str(version), direction)
        self._loaded[key] = (backend, artifact)
        self._load_seconds.labels(*key, backend).set(seconds)
        self._model_info.labels(*key, backend, artifact).set(1)
        self._requests.labels(model, direction, "OK")
        for metric in (self._images, self._exec, self._exec_failures, self._expired):
            metric.labels(model, direction)  # a new child starts at 0; an existing one is kept
        # The queue depth's series is the batcher's: see watch_queue_depth.

    def model_unloaded(self, model: str, version: int, direction: str) -> None:
        """Remove a model direction's load-time and info series (nothing if not loaded)."""
        key = (model, str(version), direction)
        previous = self._loaded.pop(key, None)
        if previous is None:
            return
        backend, artifact = previous
        self._load_seconds.remove(*key, backend)
        self._model_info.remove(*key, backend, artifact)

    def set_serving(self, serving: bool) -> None:
        """Mirror the health status: 1 while SERVING, 0 otherwise."""
        self._ready.set(1 if serving else 0)

    def start_http_server(self, port: int, host: str = "0.0.0.0") -> MetricsServer:
        """Serve `/metrics` on `host:port` from a daemon thread; port 0 picks a free port."""
        try:
            httpd, thread = start_http_server(port, host, registry=self.registry)
        except OSError as error:
            raise RuntimeError(
                f"cannot serve metrics on {host}:{port} ({error}); pick another --metrics-port"
            ) from error
        server = MetricsServer(httpd, thread)
        logger.info("metrics on http://%s:%d/metrics", host, server.port)
        return server

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format, as `/metrics` serves it."""
        return generate_latest(self.registry)

    def close(self) -> None:
        """Stop exporting GPU gauges and release NVML, if this object started it."""
        if self._gpu_collector is not None:
            self.registry.unregister(self._gpu_collector)
            self._gpu_collector = None
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception as error:
                logger.warning("NVML shutdown failed: %s", error)
            self._nvml = None
