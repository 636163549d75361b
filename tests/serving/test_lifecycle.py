"""Start-up and shutdown: NOT_SERVING until warm, SIGTERM drains without losing a request."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from i2i.serving.process import ServerProcess
from i2i.serving.server import Server
from i2i.serving.store import ModelStore
from i2i.v1 import translator_pb2 as pb
from i2i.v1 import translator_pb2_grpc as pb_grpc
from tests.serving.conftest import MODEL, png_bytes, sample_image, server_config

ROOT = Path(__file__).resolve().parents[2]


def translate_request(seed: int = 0) -> pb.TranslateRequest:
    return pb.TranslateRequest(
        model=MODEL, direction="A2B", image=pb.Image(encoded=png_bytes(sample_image(seed=seed)))
    )


def health(target: str) -> str:
    with grpc.insecure_channel(target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def test_not_serving_until_loaded_then_draining(tiny_repository, monkeypatch):
    loading = threading.Event()
    release = threading.Event()
    real_load = ModelStore.load

    def slow_load(self, *args, **kwargs):
        loading.set()
        assert release.wait(30)
        return real_load(self, *args, **kwargs)

    monkeypatch.setattr(ModelStore, "load", slow_load)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = Server(server_config(tiny_repository, grace_seconds=10))
    started = asyncio.run_coroutine_threadsafe(server.start(), loop)
    try:
        assert loading.wait(30)
        target = f"127.0.0.1:{server.port}"
        assert health(target) == "NOT_SERVING"
        stub = pb_grpc.TranslatorStub(grpc.insecure_channel(target))
        with pytest.raises(grpc.RpcError) as caught:
            stub.Translate(translate_request(), timeout=10)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "starting" in caught.value.details()
        for call in (
            lambda: stub.ListModels(pb.ListModelsRequest(), timeout=10),
            lambda: stub.GetModel(pb.GetModelRequest(model=MODEL), timeout=10),
        ):
            with pytest.raises(grpc.RpcError) as caught:
                call()
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        release.set()
        started.result(60)
        assert health(target) == "SERVING"
        assert stub.Translate(translate_request(), timeout=30).images

        # Hold one request in the backend, then drain: NOT_SERVING and UNAVAILABLE for new
        # calls while the held one is still answered.
        backend = server.store.direction(MODEL, None, "A2B").backend
        real_run, entered, go = backend.run, threading.Event(), threading.Event()

        def held_run(images, style=None):
            entered.set()
            assert go.wait(30)
            return real_run(images, style)

        backend.run = held_run
        with ThreadPoolExecutor(1) as pool:
            held = pool.submit(stub.Translate, translate_request(1), timeout=30)
            assert entered.wait(30)
            stopping = asyncio.run_coroutine_threadsafe(server.stop(), loop)
            deadline = time.monotonic() + 10
            while health(target) != "NOT_SERVING":
                assert time.monotonic() < deadline
                time.sleep(0.02)
            with pytest.raises(grpc.RpcError) as caught:
                stub.Translate(translate_request(2), timeout=10)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            go.set()
            assert held.result(30).images
            stopping.result(30)
    finally:
        release.set()
        if not server._stopped.is_set():
            asyncio.run_coroutine_threadsafe(server.stop(grace=1), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


@pytest.mark.slow
def test_sigterm_drains_accepted_requests_and_exits_0(tiny_repository):
    # Requests wait up to 1.5 s for their batch to fill, so SIGTERM finds them accepted.
    server = ServerProcess(
        tiny_repository, "--metrics-port", "-1", "--warmup-size", "32", "--max-batch", "16",
        "--max-delay-ms", "1500", "--grace-seconds", "20",
    ).start()  # fmt: skip
    process, target = server.process, server.target
    assert process is not None
    try:
        stub = pb_grpc.TranslatorStub(grpc.insecure_channel(target))
        with ThreadPoolExecutor(4) as pool:
            accepted = [
                pool.submit(stub.Translate, translate_request(i), timeout=30) for i in range(4)
            ]
            time.sleep(0.5)  # in the queue, waiting for the batch
            process.send_signal(signal.SIGTERM)
            time.sleep(0.2)
            assert health(target) == "NOT_SERVING"
            with pytest.raises(grpc.RpcError) as caught:
                stub.Translate(translate_request(9), timeout=10)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            replies = [future.result(30) for future in accepted]
        assert all(len(reply.images) == 1 for reply in replies)  # nothing accepted was lost
        assert max(reply.batch_size for reply in replies) > 1
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.slow
def test_sigterm_under_load_answers_unavailable_for_the_drain_delay(tiny_repository):
    # 32 clients keep calling through SIGTERM. For --drain-delay-s the server stays up,
    # NOT_SERVING, and answers every new call UNAVAILABLE; no call is CANCELLED (as when
    # the port closed while calls were arriving), and every accepted one is answered.
    delay = 3.0
    server = ServerProcess(
        tiny_repository, "--metrics-port", "-1", "--warmup-size", "32", "--max-batch", "8",
        "--max-delay-ms", "20", "--drain-delay-s", str(delay), "--grace-seconds", "20",
    ).start()  # fmt: skip
    process, target = server.process, server.target
    assert process is not None
    stop_calling = threading.Event()
    calls: list[tuple[float, str, str]] = []  # (start, code, details)

    def client(seed: int) -> None:
        with grpc.insecure_channel(target) as channel:
            stub = pb_grpc.TranslatorStub(channel)
            message = translate_request(seed)
            while not stop_calling.is_set():
                start = time.monotonic()
                try:
                    stub.Translate(message, timeout=30)
                    calls.append((start, "OK", ""))
                except grpc.RpcError as exc:
                    calls.append((start, exc.code().name, exc.details() or ""))
                    time.sleep(0.01)

    try:
        with ThreadPoolExecutor(32) as pool:
            clients = [pool.submit(client, seed) for seed in range(32)]
            time.sleep(1.5)  # traffic flows
            signalled = time.monotonic()
            process.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            assert health(target) == "NOT_SERVING"
            time.sleep(delay - 1.3)  # clients keep calling well into the delay...
            assert process.poll() is None  # ...and the server is still there to answer
            stop_calling.set()
            for future in clients:
                future.result(30)
        assert process.wait(30) == 0
        exited = time.monotonic()
    finally:
        stop_calling.set()
        if process.poll() is None:
            process.kill()
            process.wait()
    assert exited - signalled >= delay
    codes = {code for _, code, _ in calls}
    assert codes <= {"OK", "UNAVAILABLE"}, [c for c in calls if c[1] not in ("OK", "UNAVAILABLE")]
    before = [code for start, code, _ in calls if start < signalled - 0.5]
    assert before and set(before) == {"OK"}
    late = [details for start, code, details in calls if start > signalled + 0.5]
    assert late and all("shutting down" in details for details in late)


def test_sigterm_while_loading_stops_without_serving(tiny_repository, monkeypatch):
    loading, release = threading.Event(), threading.Event()
    real_load_direction = ModelStore._load_direction

    def slow_load_direction(self, *args, **kwargs):
        loaded = real_load_direction(self, *args, **kwargs)
        loading.set()
        assert release.wait(30)
        return loaded

    monkeypatch.setattr(ModelStore, "_load_direction", slow_load_direction)
    closed = []
    server = Server(server_config(tiny_repository))

    async def scenario() -> None:
        starting = asyncio.create_task(server.start())
        while not loading.is_set():
            await asyncio.sleep(0.01)
        await server.stop(grace=1)  # SIGTERM while the first direction warms
        release.set()
        await asyncio.wait_for(starting, 30)

    import i2i.serving.backends.ort as ort_backend

    real_close = ort_backend.OnnxRuntimeBackend.close
    monkeypatch.setattr(
        ort_backend.OnnxRuntimeBackend,
        "close",
        lambda self: (closed.append(self), real_close(self)),
    )
    asyncio.run(scenario())
    assert not server.servicer.accepting and server.store.models == {}
    assert len(closed) == 1  # the one direction loaded before the stop was closed again


def test_missing_repository_exits_with_a_message(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "i2i.serving",
            "--repository",
            str(tmp_path / "none"),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--metrics-port",
            "-1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "none" in result.stderr and "could not load" in result.stderr
