"""`i2i-serve`: the gRPC server — health, reflection, auth, TLS, metrics and a graceful drain.

Start-up binds the port first and answers health checks with NOT_SERVING while models
load and warm (in a thread, so the event loop keeps answering); then SERVING. SIGTERM or
SIGINT: health NOT_SERVING, new calls UNAVAILABLE for at least ``--drain-delay-s`` (while
load balancers stop sending), accepted calls finish (at most ``--grace-seconds``), the
port closes, batchers drain, exit 0.
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_reflection.v1alpha import reflection_pb2 as reflection_pb

from i2i.serving import inference
from i2i.serving.batcher import BatchObserver
from i2i.serving.config import ServerConfig, ServerConfigError
from i2i.serving.metrics import MetricsServer, ServerMetrics
from i2i.serving.pipeline import Pipeline
from i2i.serving.servicer import TranslatorServicer, add_to_server
from i2i.serving.store import CONDITIONAL_LABEL, LoadedDirection, LoadError, ModelStore
from i2i.v1 import translator_pb2 as pb

log = logging.getLogger(__name__)

SERVICE = pb.DESCRIPTOR.services_by_name["Translator"].full_name  # "i2i.v1.Translator"
# Probes (Kubernetes, grpcurl, KServe and Triton clients) need no token for these: they
# tell no more than the health service does.
OPEN_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.",
    f"/{inference.SERVICE}/ServerLive",
    f"/{inference.SERVICE}/ServerReady",
)
# Methods with a request stream: a refusal must be a stream handler too.
STREAMING_METHODS = (f"/{SERVICE}/TranslateStream", f"/{inference.SERVICE}/ModelStreamInfer")
# Server reflection v1 (what grpcurl and current tools ask first) is v1alpha under another
# package name: the same messages, field for field.
REFLECTION_V1 = "grpc.reflection.v1"
REFLECTION_V1_SERVICE = f"{REFLECTION_V1}.ServerReflection"


class TokenAuth(grpc.aio.ServerInterceptor):
    """Requires ``authorization: Bearer <token>`` on every call but health and reflection.

    The scheme name is case-insensitive (RFC 7235: "bearer", "BEARER"); the token is not.
    """

    def __init__(self, token: str) -> None:
        self._expected = token.encode()

        async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "this server needs 'authorization: Bearer <token>' metadata with its token",
            )

        self._refuse_unary = grpc.unary_unary_rpc_method_handler(refuse)
        self._refuse_stream = grpc.stream_stream_rpc_method_handler(refuse)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = details.method or ""
        if method.startswith(OPEN_PREFIXES):
            return await continuation(details)
        given = dict(details.invocation_metadata or ()).get("authorization", "")
        text = given.decode(errors="replace") if isinstance(given, bytes) else given
        scheme, _, credentials = text.strip().partition(" ")
        # compare_digest: the time taken does not tell how much of a wrong token matched.
        matches = hmac.compare_digest(credentials.strip().encode(), self._expected)
        if scheme.lower() == "bearer" and matches:
            return await continuation(details)
        return self._refuse_stream if method in STREAMING_METHODS else self._refuse_unary


class _Observer:
    """Feeds one direction's batcher events into the metrics."""

    def __init__(self, metrics: ServerMetrics, model: str, direction: str) -> None:
        self.metrics, self.model, self.direction = metrics, model, direction

    def on_batch(self, key: Hashable, size: int, compute_s: float, failed: bool) -> None:
        self.metrics.batch_done(self.model, self.direction, size, compute_s, failed)

    def on_expired(self, key: Hashable, count: int) -> None:
        self.metrics.expired(self.model, self.direction, count)


class Server:
    """One i2i server: start it, await `wait()`, or `stop()` it (tests run it in-process)."""

    def __init__(self, config: ServerConfig, metrics: ServerMetrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or ServerMetrics(device_id=config.device_id)
        self.executor = ThreadPoolExecutor(config.workers, thread_name_prefix="i2i-image")
        self.store = ModelStore(config, observer_for=self._observer)
        self.pipeline = Pipeline(
            self.store,
            self.executor,
            max_pixels=config.max_image_pixels,
            max_samples=config.max_samples,
            max_reply_bytes=config.max_message_bytes,
        )
        self.servicer = TranslatorServicer(
            self.pipeline,
            self.metrics,
            self.executor,
            max_calls=config.max_concurrent_rpcs,
            # A full queue moves on within the batching delay: the time to wait for a retry.
        )
        # The v2 service shares Translate's admission, in-flight count and drain.
        self.inference = inference.InferenceServicer(
            self.pipeline, self.metrics, self.servicer, self.executor
        )
        self.metrics.watch_in_flight(lambda: self.servicer.in_flight)
        self.health = health.aio.HealthServicer()
        self.port = 0
        self.metrics_server: MetricsServer | None = None
        self._server: grpc.aio.Server | None = None
        self._stopped = asyncio.Event()
        self._stopping = False

    def _observer(self, model: str, direction: str) -> BatchObserver:
        return _Observer(self.metrics, model, direction)

    def _loaded(self, direction: LoadedDirection, seconds: float) -> None:
        self.metrics.model_loaded(
            direction.model,
            direction.version,
            direction.name,
            direction.backend.name,
            seconds,
            artifact=direction.backend.artifact,
        )
        batcher = direction.batcher
        assert batcher is not None
        # One series per queue: the targets that share the conditional graph's batcher
        # report it once, under the label of its batch metrics.
        label = direction.name if direction.domain_index is None else CONDITIONAL_LABEL
        self.metrics.watch_queue_depth(direction.model, label, lambda: batcher.queue_depth)

    async def _set_health(self, status: int) -> None:
        for service in ("", SERVICE):
            await self.health.set(service, status)

    def _credentials(self) -> grpc.ServerCredentials | None:
        config = self.config
        if config.tls_cert is None or config.tls_key is None:
            return None
        pair = (config.tls_key.read_bytes(), config.tls_cert.read_bytes())
        client_ca = config.tls_client_ca.read_bytes() if config.tls_client_ca else None
        return grpc.ssl_server_credentials(
            [pair], root_certificates=client_ca, require_client_auth=client_ca is not None
        )

    async def start(self) -> None:
        """Bind, answer NOT_SERVING, load and warm every model, then SERVING."""
        config = self.config
        interceptors = [TokenAuth(config.token)] if config.token else []
        options = [
            ("grpc.max_receive_message_length", config.max_message_bytes),
            ("grpc.max_send_message_length", config.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
        if config.max_connection_age_s is not None:
            options += [
                ("grpc.max_connection_age_ms", int(config.max_connection_age_s * 1000)),
                # Calls still running on an aged connection get the drain's grace to finish.
                ("grpc.max_connection_age_grace_ms", int(max(config.grace_seconds, 1) * 1000)),
            ]
        # --max-concurrent-rpcs is enforced by the servicer, not by gRPC, whose limit would
        # also refuse health checks under load (and fail Kubernetes probes).
        server = grpc.aio.server(interceptors=interceptors, options=options)
        add_to_server(self.servicer, server)
        inference.add_to_server(self.inference, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        health_name = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
        enable_reflection((SERVICE, inference.SERVICE, health_name), server)
        address = f"{config.host}:{config.port}"
        credentials = self._credentials()
        if config.token and credentials is None:
            log.warning("a bearer token is required but the port is plaintext: use --tls-cert")
        try:
            if credentials is None:
                self.port = server.add_insecure_port(address)
            else:
                self.port = server.add_secure_port(address, credentials)
        except RuntimeError as exc:
            raise ServerConfigError(f"cannot listen on {address}: {exc}") from None
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        self.metrics.set_serving(False)
        await server.start()
        self._server = server
        if config.metrics_port is not None:
            try:
                self.metrics_server = self.metrics.start_http_server(
                    config.metrics_port, config.metrics_address
                )
            except RuntimeError as exc:
                await server.stop(0)
                raise ServerConfigError(str(exc)) from None
        log.info(
            "listening on %s:%d (%s), metrics on %s; loading models from %s",
            config.host,
            self.port,
            "TLS" if credentials else "plaintext",
            f"port {self.metrics_server.port}" if self.metrics_server else "off",
            config.repository,
        )
        start = time.monotonic()
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, self.store.load, self._loaded)
        except BaseException:
            if not self._stopping:
                await self._close(grace=0)
            raise
        if self._stopping:  # SIGTERM while loading: stop() has closed everything
            return
        # Everything loaded so far (torch, runtimes, models) lives as long as the process:
        # move it out of the collector's sight, or each full collection walks ~200k objects
        # and stalls every request for ~0.1 s (seen as p99 spikes in benchmarks/serve.py).
        gc.collect()
        gc.freeze()
        await self.store.start()
        self.servicer.accepting = True
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        self.metrics.set_serving(True)
        names = ", ".join(d.label for d in self.store.directions())
        log.info("SERVING %s (ready in %.1f s)", names, time.monotonic() - start)

    async def stop(self, grace: float | None = None, drain_delay: float | None = None) -> None:
        """Drain: NOT_SERVING, refuse new calls, finish accepted ones, stop everything.

        New calls get UNAVAILABLE for at least `drain_delay` seconds (the config's by
        default; none if the server was not yet serving) while accepted ones finish; the
        port closes after both. Returns within about max(`grace`, `drain_delay`) seconds
        (the config's by default), whatever the backends do: a batch still running at the
        end of the grace period is abandoned with a log line.
        """
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        self.store.stop_loading.set()
        grace = self.config.grace_seconds if grace is None else grace
        delay = self.config.drain_delay_s if drain_delay is None else drain_delay
        if not self.servicer.accepting:  # still loading: no client was ever sent here
            delay = 0.0
        now = time.monotonic()
        deadline, delay_end = now + grace, now + delay
        log.info(
            "draining: NOT_SERVING, new calls UNAVAILABLE for %.1f s, finishing accepted "
            "requests (grace %.1f s)",
            delay,
            grace,
        )
        try:
            self.servicer.accepting = False
            await self.health.enter_graceful_shutdown()
            self.metrics.set_serving(False)
            # The port stays open while accepted requests finish and for the drain delay, so
            # probes read NOT_SERVING and new calls get a clear UNAVAILABLE. Closing it
            # sooner would cancel (CANCELLED) calls that are on their way as it closes: the
            # delay lets load balancers and clients stop sending first.
            while (now := time.monotonic()) < delay_end or (
                self.servicer.in_flight and now < deadline
            ):
                await asyncio.sleep(0.02)
            if self.servicer.in_flight:
                log.warning(
                    "%d requests still running after the grace period", self.servicer.in_flight
                )
        finally:
            await self._close(max(0.0, deadline - time.monotonic()))

    async def _close(self, grace: float) -> None:
        try:
            if self._server is not None:
                # Waits for running calls (which wait on their batches) up to `grace`.
                await self._server.stop(grace)
            try:
                await asyncio.wait_for(self.store.stop(drain=True), timeout=grace + 1.0)
            except asyncio.TimeoutError:  # noqa: UP041 - distinct from TimeoutError on 3.10
                log.warning("a batch was still running at the end of the grace period")
            if self.metrics_server is not None:
                self.metrics_server.close()
            self.metrics.close()
            self.executor.shutdown(wait=False, cancel_futures=True)
        finally:
            self._stopped.set()
            log.info("stopped")

    async def wait(self) -> None:
        await self._stopped.wait()


async def serve(config: ServerConfig) -> int:
    """Run until SIGTERM or SIGINT; return the exit status."""
    server = Server(config)
    loop = asyncio.get_running_loop()
    stop_task: list[asyncio.Task[None]] = []

    def on_signal(signum: int) -> None:
        name = signal.Signals(signum).name
        if stop_task:  # a second signal: the operator wants out now
            log.warning("got %s again: exiting without waiting for the drain", name)
            os._exit(1)
        log.info("got %s", name)
        stop_task.append(loop.create_task(server.stop()))

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        await server.start()
    except LoadError as exc:
        log.error("could not load the models: %s", exc)
        return 1
    await server.wait()
    return 0


@cache
def _reflection_v1_file() -> None:
    """Add grpc/reflection/v1/reflection.proto (v1alpha's, renamed) to the default pool.

    Reflection answers from that pool, so this lets clients describe the v1 service too.
    """
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb.DESCRIPTOR.CopyToProto(proto)
    old = proto.package
    proto.name = "grpc/reflection/v1/reflection.proto"
    proto.package = REFLECTION_V1
    for message in proto.message_type:  # v1alpha's messages have no nested types
        for field in message.field:
            if field.type_name:  # messages and enums only: setting it on others is an error
                field.type_name = field.type_name.replace(f".{old}.", f".{REFLECTION_V1}.")
    for method in proto.service[0].method:
        method.input_type = method.input_type.replace(f".{old}.", f".{REFLECTION_V1}.")
        method.output_type = method.output_type.replace(f".{old}.", f".{REFLECTION_V1}.")
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(proto.name)  # grpcio-reflection's own v1, where it has one
    except KeyError:
        pool.AddSerializedFile(proto.SerializeToString())


def enable_reflection(services: Sequence[str], server: grpc.aio.Server) -> None:
    """Server reflection v1 and v1alpha (grpcio-reflection ships only v1alpha)."""
    _reflection_v1_file()
    names = (*services, reflection.SERVICE_NAME, REFLECTION_V1_SERVICE)
    reflection.enable_server_reflection(names, server)
    servicer = reflection.aio.ReflectionServicer(names)
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb.ServerReflectionResponse.SerializeToString,
    )
    handlers = {"ServerReflectionInfo": handler}
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(REFLECTION_V1_SERVICE, handlers),)
    )


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the request id and model when a record has them."""

    FIELDS = ("request_id", "model", "direction")

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in self.FIELDS:
            if hasattr(record, name):
                entry[name] = getattr(record, name)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(config: ServerConfig) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if config.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.log_level.upper())


def run(config: ServerConfig) -> int:
    """Serve with `config` until signalled; the exit status (2: a bad setting found late)."""
    configure_logging(config)
    try:
        return asyncio.run(serve(config))
    except ServerConfigError as exc:
        log.error("%s", exc)
        return 2
