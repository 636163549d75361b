"""Server metrics: exact values in the exposition, `promtool` lint, and a real Prometheus scrape."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from i2i.serving.metrics import BATCH_SIZE_BUCKETS, LATENCY_BUCKETS, GpuCollector, ServerMetrics
from i2i.v1 import translator_pb2 as pb
from tests.serving.conftest import png_bytes, sample_image

HANG_GUARD_S = 60.0
ROUTE = {"model": "tiny", "direction": "A2B"}


def samples(exposition: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition, keyed by (sample name, labels)."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(exposition.decode())
        for s in family.samples
    }


def value(exposition: bytes, name: str, /, **labels: str) -> float:
    """One sample's value; KeyError (listing what there is) if it is missing."""
    found = samples(exposition)
    key = (name, frozenset(labels.items()))
    if key not in found:
        near = sorted(str(k) for k in found if k[0] == name)
        raise KeyError(f"no sample {name}{labels}; samples of that name: {near}")
    return found[key]


def families(exposition: bytes) -> dict[str, str]:
    """Metric family name -> type."""
    return {f.name: f.type for f in text_string_to_metric_families(exposition.decode())}


def tool(name: str) -> str:
    """Path of a Prometheus binary; fails under CI (which must run it), skips elsewhere."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not on PATH: install Debian's prometheus package"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def record_some(metrics: ServerMetrics) -> None:
    """A small, known history: 3 OK calls (5 images), 1 invalid, 2 batches, 1 expired."""
    metrics.model_loaded("tiny", 1, "A2B", "onnxruntime-cpu", 0.75, artifact="A2B.onnx")
    metrics.request_done("tiny", "A2B", "OK", 0.004, 2)
    metrics.request_done("tiny", "A2B", "OK", 0.02, 2)
    metrics.request_done("tiny", "A2B", "OK", 0.3, 1)
    metrics.request_done("tiny", "A2B", "INVALID_ARGUMENT", 0.0001, 4)
    metrics.queued("tiny", "A2B", 0.002)
    metrics.queued("tiny", "A2B", 0.003)
    metrics.batch_done("tiny", "A2B", 4, 0.01, failed=False)
    metrics.batch_done("tiny", "A2B", 1, 0.5, failed=True)
    metrics.expired("tiny", "A2B", 1)
    metrics.watch_queue_depth("tiny", "A2B", lambda: 3)
    metrics.set_serving(True)


def test_exposition_has_the_recorded_values() -> None:
    metrics = ServerMetrics(gpu=False)
    record_some(metrics)
    text = metrics.exposition()

    assert value(text, "i2i_inference_requests_total", code="OK", **ROUTE) == 3
    assert value(text, "i2i_inference_requests_total", code="INVALID_ARGUMENT", **ROUTE) == 1
    # Images count only for OK calls; the invalid call's 4 images are not counted.
    assert value(text, "i2i_inference_images_total", **ROUTE) == 5
    # The total-latency histogram counts every call, whatever its code.
    assert value(text, "i2i_inference_request_duration_seconds_count", **ROUTE) == 4
    total = value(text, "i2i_inference_request_duration_seconds_sum", **ROUTE)
    assert total == pytest.approx(0.3241)
    le_5ms = value(text, "i2i_inference_request_duration_seconds_bucket", le="0.005", **ROUTE)
    assert le_5ms == 2
    assert value(text, "i2i_inference_queue_duration_seconds_count", **ROUTE) == 2
    assert value(text, "i2i_inference_queue_duration_seconds_sum", **ROUTE) == pytest.approx(0.005)
    assert value(text, "i2i_inference_compute_duration_seconds_count", **ROUTE) == 2
    assert value(text, "i2i_inference_compute_duration_seconds_sum", **ROUTE) == pytest.approx(0.51)
    assert value(text, "i2i_inference_batch_size_sum", **ROUTE) == 5
    assert value(text, "i2i_inference_batch_size_bucket", le="1.0", **ROUTE) == 1
    assert value(text, "i2i_inference_batch_size_bucket", le="4.0", **ROUTE) == 2
    assert value(text, "i2i_inference_exec_total", **ROUTE) == 2
    assert value(text, "i2i_inference_exec_failures_total", **ROUTE) == 1
    assert value(text, "i2i_inference_expired_total", **ROUTE) == 1
    assert value(text, "i2i_inference_pending_requests", **ROUTE) == 3
    assert value(text, "i2i_server_ready") == 1
    load = {"model": "tiny", "version": "1", "direction": "A2B", "backend": "onnxruntime-cpu"}
    assert value(text, "i2i_model_load_duration_seconds", **load) == 0.75
    assert value(text, "i2i_model_info", artifact="A2B.onnx", **load) == 1

    kinds = families(text)
    assert kinds["i2i_inference_requests"] == "counter"
    assert kinds["i2i_inference_request_duration_seconds"] == "histogram"
    assert kinds["i2i_inference_pending_requests"] == "gauge"
    assert "process_cpu_seconds" in kinds  # the default registry carries the process metrics


def test_buckets_span_cpu_and_gpu_latencies() -> None:
    metrics = ServerMetrics(gpu=False)
    metrics.queued("tiny", "A2B", 0.0)
    text = metrics.exposition()
    for le in ("0.0005", "10.0", "+Inf"):
        assert value(text, "i2i_inference_queue_duration_seconds_bucket", le=le, **ROUTE) == 1
    assert len(LATENCY_BUCKETS) == 14
    assert BATCH_SIZE_BUCKETS == (1, 2, 4, 8, 16, 32, 64, 128)


def test_model_load_starts_counters_at_zero() -> None:
    metrics = ServerMetrics(gpu=False)
    metrics.model_loaded("tiny", 1, "B2A", "onnxruntime-cpu", 0.1)
    text = metrics.exposition()
    route = {"model": "tiny", "direction": "B2A"}
    # Present before any request, so rate() and alerts work from the first scrape.
    assert value(text, "i2i_inference_requests_total", code="OK", **route) == 0
    assert value(text, "i2i_inference_images_total", **route) == 0
    # The queue's series comes with its batcher (watch_queue_depth), one per queue.
    assert ("i2i_inference_pending_requests", frozenset(route.items())) not in samples(text)


def test_gauges_read_live_state_at_scrape_time() -> None:
    metrics = ServerMetrics(gpu=False)
    state = {"calls": 2, "queue": 5}
    metrics.watch_in_flight(lambda: state["calls"])
    metrics.watch_queue_depth("tiny", "A2B", lambda: state["queue"])
    text = metrics.exposition()
    assert value(text, "i2i_inference_in_flight_requests") == 2
    assert value(text, "i2i_inference_pending_requests", **ROUTE) == 5
    state.update(calls=0, queue=1)
    text = metrics.exposition()
    assert value(text, "i2i_inference_in_flight_requests") == 0
    assert value(text, "i2i_inference_pending_requests", **ROUTE) == 1


def test_reloading_a_model_replaces_its_series() -> None:
    metrics = ServerMetrics(gpu=False)
    metrics.model_loaded("tiny", 1, "A2B", "onnxruntime-cpu", 0.5, artifact="A2B.onnx")
    metrics.model_loaded("tiny", 1, "A2B", "tensorrt", 2.0, artifact="A2B.plan")
    info = [k for k in samples(metrics.exposition()) if k[0] == "i2i_model_info"]
    assert len(info) == 1
    assert ("backend", "tensorrt") in info[0][1]
    metrics.model_unloaded("tiny", 1, "A2B")
    text = metrics.exposition()
    assert not [
        k for k in samples(text) if k[0] in ("i2i_model_info", "i2i_model_load_duration_seconds")
    ]


def test_servers_in_one_process_keep_separate_counts() -> None:
    first, second = ServerMetrics(gpu=False), ServerMetrics(gpu=False)
    first.request_done("tiny", "A2B", "OK", 0.01, 1)
    assert value(first.exposition(), "i2i_inference_requests_total", code="OK", **ROUTE) == 1
    with pytest.raises(KeyError):
        value(second.exposition(), "i2i_inference_requests_total", code="OK", **ROUTE)
    shared = CollectorRegistry()
    on_shared = ServerMetrics(shared, gpu=False)
    assert on_shared.registry is shared
    assert "i2i_server_ready" in families(generate_latest(shared))
    assert "process_cpu_seconds" not in families(generate_latest(shared))


def test_http_server_serves_the_registry_and_closes() -> None:
    metrics = ServerMetrics(gpu=False)
    metrics.request_done("tiny", "A2B", "OK", 0.01, 2)
    server = metrics.start_http_server(0, "127.0.0.1")
    try:
        assert server.port > 0
        url = f"http://127.0.0.1:{server.port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = response.read()
        assert value(body, "i2i_inference_images_total", **ROUTE) == 2
    finally:
        server.close()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", server.port), timeout=2):
        pass


def test_promtool_finds_no_problems() -> None:
    promtool = tool("promtool")
    metrics = ServerMetrics(gpu=False)
    record_some(metrics)
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=metrics.exposition(),
        capture_output=True,
        timeout=HANG_GUARD_S,
    )
    problems = (result.stdout + result.stderr).decode().strip()
    assert result.returncode == 0, problems
    assert problems == ""


# --- GPU gauges ------------------------------------------------------------------------------


class FakeNvmlError(Exception):
    """What the stand-in raises for an unreadable GPU."""


@dataclass
class FakeNvml:
    """The few NVML calls GpuCollector makes; no GPU exists where these tests run."""

    broken: frozenset[int] = frozenset()

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:  # noqa: N802 (NVML's name)
        return index

    def nvmlDeviceGetUUID(self, handle: int) -> str:  # noqa: N802
        return f"GPU-0000{handle}"

    def nvmlDeviceGetName(self, handle: int) -> bytes:  # noqa: N802 (old pynvml: bytes)
        return b"Fake H100"

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:  # noqa: N802
        if handle in self.broken:
            raise FakeNvmlError("GPU is lost")
        return SimpleNamespace(used=(handle + 1) * 2**30, total=80 * 2**30, free=0)

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Any:  # noqa: N802
        return SimpleNamespace(gpu=37 + handle, memory=5)


def test_gpu_collector_reads_nvml_at_scrape_time() -> None:
    registry = CollectorRegistry()
    registry.register(GpuCollector(FakeNvml(broken=frozenset({1})), [0, 1, 2]))
    text = generate_latest(registry)
    gpu0 = {"gpu": "0", "uuid": "GPU-00000", "name": "Fake H100"}
    gpu2 = {"gpu": "2", "uuid": "GPU-00002", "name": "Fake H100"}
    assert value(text, "i2i_gpu_utilization_ratio", **gpu0) == pytest.approx(0.37)
    assert value(text, "i2i_gpu_utilization_ratio", **gpu2) == pytest.approx(0.39)
    assert value(text, "i2i_gpu_memory_used_bytes", **gpu2) == 3 * 2**30
    assert value(text, "i2i_gpu_memory_total_bytes", **gpu0) == 80 * 2**30
    # The unreadable GPU is left out; the scrape itself still succeeds.
    assert not [k for k in samples(text) if ("gpu", "1") in k[1]]
    assert families(text)["i2i_gpu_memory_used_bytes"] == "gauge"


def test_without_gpu_metrics_nothing_gpu_is_exported() -> None:
    assert not ServerMetrics(gpu=False).gpu
    auto = ServerMetrics()  # here: no pynvml or no GPU, so no gauges and no error
    names = families(auto.exposition())
    assert any(n.startswith("i2i_gpu_") for n in names) == auto.gpu
    if not auto.gpu:
        with pytest.raises(RuntimeError, match="nvidia-ml-py|NVML|GPU"):
            ServerMetrics(gpu=True)
    auto.close()


@pytest.mark.gpu
def test_gpu_metrics_on_a_real_gpu() -> None:
    pynvml = pytest.importorskip("pynvml", reason="needs nvidia-ml-py (pip install nvidia-ml-py)")
    try:
        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
        pynvml.nvmlShutdown()
    except pynvml.NVMLError as error:
        pytest.skip(f"needs an NVIDIA GPU and driver: {error}")
    if count == 0:
        pytest.skip("needs an NVIDIA GPU: NVML sees none")
    metrics = ServerMetrics(gpu=True, device_id=0)
    try:
        found = {
            k: v for k, v in samples(metrics.exposition()).items() if k[0].startswith("i2i_gpu")
        }
        total = [v for k, v in found.items() if k[0] == "i2i_gpu_memory_total_bytes"]
        used = [v for k, v in found.items() if k[0] == "i2i_gpu_memory_used_bytes"]
        busy = [v for k, v in found.items() if k[0] == "i2i_gpu_utilization_ratio"]
        assert len(total) == len(used) == len(busy) == 1
        assert 0 < used[0] <= total[0]
        assert 0.0 <= busy[0] <= 1.0
        labels = dict(next(iter(found))[1])
        assert labels["gpu"] == "0" and labels["uuid"].startswith("GPU-") and labels["name"]
    finally:
        metrics.close()
    assert not any(n.startswith("i2i_gpu_") for n in families(metrics.exposition()))


# --- A real Prometheus -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


@pytest.fixture
def recorded(start_server: Any) -> tuple[ServerMetrics, int]:
    """A real i2i server on 127.0.0.1 with its metrics port, after three A2B translations."""
    server = start_server(metrics_port=0, metrics_host="127.0.0.1")
    stub = server.stub()
    image = pb.Image(encoded=png_bytes(sample_image()))
    for _ in range(3):
        stub.Translate(pb.TranslateRequest(model="tiny", direction="A2B", image=image), timeout=30)
    assert server.server.metrics_server is not None
    return server.server.metrics, server.server.metrics_server.port


@dataclass
class Prometheus:
    """A running Prometheus: where its API is and where it logs."""

    url: str
    log: Path

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@pytest.fixture
def prometheus(recorded: tuple[ServerMetrics, int], tmp_path: Path) -> Iterator[Prometheus]:
    """A real Prometheus on its own port, scraping `recorded` every second."""
    binary = tool("prometheus")
    _, target_port = recorded
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n  - job_name: i2i\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{target_port}']\n"
    )
    port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield Prometheus(f"http://127.0.0.1:{port}", tmp_path / "prometheus.log")
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


def test_server_metrics_port_passes_promtool(recorded: tuple[ServerMetrics, int]) -> None:
    _, port = recorded
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read()
    assert value(text, "i2i_inference_images_total", model="tiny", direction="A2B") == 3
    assert value(text, "i2i_server_ready") == 1
    assert (
        value(
            text,
            "i2i_model_info",
            model="tiny",
            version="1",
            direction="B2A",
            backend="onnxruntime-cpu",
            artifact="B2A.onnx",
        )
        == 1
    )
    check = subprocess.run(
        [tool("promtool"), "check", "metrics"], input=text, capture_output=True, timeout=60
    )
    assert check.returncode == 0 and not check.stdout.strip() and not check.stderr.strip(), (
        check.stdout + check.stderr
    )


def test_a_real_prometheus_scrapes_the_server(
    prometheus: Prometheus, recorded: tuple[ServerMetrics, int]
) -> None:
    _, target_port = recorded
    query = 'i2i_inference_requests_total{model="tiny",direction="A2B",code="OK"}'
    url = f"{prometheus.url}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    deadline = time.monotonic() + HANG_GUARD_S
    result: list[Any] = []
    while time.monotonic() < deadline:
        try:
            answer = get_json(url)
        except (urllib.error.URLError, ConnectionError):
            answer = {}  # still starting
        result = answer.get("data", {}).get("result", [])
        if result:
            break
        time.sleep(0.2)
    assert result, f"no {query} within {HANG_GUARD_S} s; its log:\n{prometheus.tail()}"
    assert len(result) == 1
    assert result[0]["metric"]["direction"] == "A2B"
    assert float(result[0]["value"][1]) == 3

    targets = get_json(f"{prometheus.url}/api/v1/targets")["data"]["activeTargets"]
    ours = [t for t in targets if t["scrapeUrl"] == f"http://127.0.0.1:{target_port}/metrics"]
    assert len(ours) == 1
    assert ours[0]["health"] == "up", ours[0].get("lastError")
