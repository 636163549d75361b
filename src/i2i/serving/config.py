"""The server's settings: one dataclass, filled from the command line (`i2i-serve --help`)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

BACKENDS = ("auto", "tensorrt", "onnxruntime", "onnxruntime-cpu", "pytorch")
PRECISIONS = ("auto", "fp32", "fp16")
# auto: what the backend needs (store.warmup_plan); minimal: one small batch; full: every
# batch size at --warmup-size.
WARMUPS = ("auto", "minimal", "full")


class ServerConfigError(ValueError):
    """A setting is missing or contradicts another; the message names the flag."""


@dataclass(frozen=True)
class ModelSelection:
    """One model to load: a name and a version (None: the latest)."""

    name: str
    version: int | None = None

    @classmethod
    def parse(cls, text: str) -> ModelSelection:
        """Parse ``NAME`` or ``NAME:VERSION``."""
        name, sep, version = text.partition(":")
        if not name or (sep and not version.isdigit()) or (sep and int(version) < 1):
            raise ServerConfigError(
                f"--model {text!r}: expected NAME or NAME:VERSION with VERSION >= 1"
            )
        return cls(name, int(version) if sep else None)


@dataclass(frozen=True)
class ServerConfig:
    """Everything `i2i-serve` can be told. Defaults suit one GPU or a laptop."""

    repository: Path
    models: tuple[ModelSelection, ...] = ()  # empty: every model, latest version
    host: str = "0.0.0.0"
    port: int = 8001
    metrics_port: int | None = 8002  # None: no metrics endpoint
    metrics_host: str | None = None  # None: the gRPC host
    backend: str = "auto"
    precision: str = "auto"
    device_id: int = 0
    threads: int | None = None  # backend intra-op threads; None: the runtime's default
    max_batch: int = 8
    max_delay_ms: float = 5.0
    max_queue: int = 64
    instances: int = 1  # batches of one direction that may run at once
    workers: int = field(default_factory=lambda: min(8, os.cpu_count() or 1))
    max_concurrent_rpcs: int | None = None
    max_connection_age_s: float | None = None  # None: connections live as long as clients like
    max_message_mb: float = 32.0
    max_image_pixels: int = 2048 * 2048  # a batch of 4096² images would not fit most GPUs
    # Pixels (height x width x samples) in one batch; 0: no limit. 8 x 256² is ~0.85 GB
    # of activations for a ResNet-9 (ngf 64) on the CPU: the arithmetic is in docs/serving.md.
    max_batch_pixels: int = 8 * 256 * 256
    max_samples: int = 16
    warmup: str = "auto"  # one of WARMUPS
    warmup_size: int = 256  # image side of the full warm-up
    grace_seconds: float = 30.0
    drain_delay_s: float = 5.0  # after SIGTERM, keep answering UNAVAILABLE this long
    token: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None  # set: mutual TLS, clients must present a certificate
    log_format: str = "text"
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        problems = []
        if self.backend not in BACKENDS:
            problems.append(f"--backend {self.backend!r}: choose one of {', '.join(BACKENDS)}")
        if self.precision not in PRECISIONS:
            problems.append(
                f"--precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}"
            )
        if self.warmup not in WARMUPS:
            problems.append(f"--warmup {self.warmup!r}: choose one of {', '.join(WARMUPS)}")
        for flag, value in (
            ("--warmup-size", self.warmup_size),
            ("--max-batch", self.max_batch),
            ("--max-queue", self.max_queue),
            ("--instances", self.instances),
            ("--workers", self.workers),
            ("--max-image-pixels", self.max_image_pixels),
            ("--max-samples", self.max_samples),
        ):
            if value < 1:
                problems.append(f"{flag} must be at least 1, got {value}")
        if self.max_delay_ms < 0:
            problems.append(f"--max-delay-ms must be >= 0, got {self.max_delay_ms}")
        if self.max_message_mb <= 0:
            problems.append(f"--max-message-mb must be > 0, got {self.max_message_mb}")
        if self.max_connection_age_s is not None and self.max_connection_age_s <= 0:
            problems.append(f"--max-connection-age-s must be > 0, got {self.max_connection_age_s}")
        if self.grace_seconds < 0:
            problems.append(f"--grace-seconds must be >= 0, got {self.grace_seconds}")
        if self.drain_delay_s < 0:
            problems.append(f"--drain-delay-s must be >= 0, got {self.drain_delay_s}")
        if self.max_batch_pixels < 0:
            problems.append(
                f"--max-batch-pixels must be >= 0 (0: no limit), got {self.max_batch_pixels}"
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            problems.append("--tls-cert and --tls-key go together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            problems.append("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key")
        if self.token is not None and not self.token:
            problems.append("the bearer token is empty")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            problems.append(f"--log-level {self.log_level!r}: use DEBUG, INFO, WARNING or ERROR")
        if self.log_format not in ("text", "json"):
            problems.append(f"--log-format {self.log_format!r}: choose text or json")
        if problems:
            raise ServerConfigError("; ".join(problems))

    @property
    def max_message_bytes(self) -> int:
        return int(self.max_message_mb * (1 << 20))

    @property
    def metrics_address(self) -> str:
        """Where the metrics endpoint binds: --metrics-host, else the gRPC host."""
        return self.host if self.metrics_host is None else self.metrics_host


ENV_PREFIX = "I2I_SERVE_"


def env_name(dest: str) -> str:
    """The environment variable that sets a flag: --max-batch is I2I_SERVE_MAX_BATCH."""
    return ENV_PREFIX + dest.upper()


def _env_defaults(parser: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
    """Let I2I_SERVE_<FLAG> set each flag's default (a Kubernetes ConfigMap, a container's
    ENV); flags on the command line still win. String defaults go through the flag's type."""
    for action in parser._actions:
        if not action.option_strings or action.dest in ("help", "token_file"):
            continue
        value = environ.get(env_name(action.dest))
        if value is None:
            continue
        if isinstance(action, argparse._AppendAction):
            action.default = [v.strip() for v in value.split(",") if v.strip()]
        else:
            action.default = value
        action.required = False


def add_arguments(
    parser: argparse.ArgumentParser, environ: Mapping[str, str] | None = None
) -> None:
    """The flags of `i2i-serve`; each may also come from I2I_SERVE_<FLAG> in `environ`."""
    d = ServerConfig(repository=Path("."))
    parser.add_argument("--repository", required=True, type=Path, help="model repository folder")
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME[:VERSION]",
        help="serve this model (repeat for several); default every model, latest version",
    )
    net = parser.add_argument_group("network")
    net.add_argument("--host", default=d.host, help="gRPC address to bind (default %(default)s)")
    net.add_argument("--port", type=int, default=d.port, help="gRPC port (default %(default)s)")
    net.add_argument(
        "--metrics-port",
        type=int,
        default=d.metrics_port,
        help="Prometheus metrics port (default %(default)s; -1 turns metrics off)",
    )
    net.add_argument(
        "--metrics-host",
        default=None,
        help="metrics address to bind (default: the --host address)",
    )
    net.add_argument(
        "--max-message-mb",
        type=float,
        default=d.max_message_mb,
        help="largest request or reply in MiB (default %(default)s)",
    )
    net.add_argument(
        "--max-concurrent-rpcs",
        type=int,
        default=None,
        help="calls handled at once; more are refused with RESOURCE_EXHAUSTED (default: no limit)",
    )
    net.add_argument(
        "--max-connection-age-s",
        type=float,
        default=None,
        help="close each client connection after this many seconds (gracefully: calls on it "
        "finish); clients reconnect and re-resolve DNS, so pods an autoscaler adds get "
        "traffic (default: never)",
    )
    run = parser.add_argument_group("inference")
    run.add_argument("--backend", choices=BACKENDS, default=d.backend, help="which runtime")
    run.add_argument(
        "--precision", choices=PRECISIONS, default=d.precision, help="fp16 on GPUs by default"
    )
    run.add_argument("--device-id", type=int, default=d.device_id, help="CUDA device index")
    run.add_argument("--threads", type=int, default=None, help="CPU threads per backend")
    run.add_argument(
        "--warmup",
        choices=WARMUPS,
        default=d.warmup,
        help="warm-up before SERVING: minimal is one batch of 1 at 64x64, full is every batch "
        "size (1, 2, 4, ..., --max-batch) at --warmup-size; auto (default) is minimal for "
        "backends on the CPU, full for GPU backends (kernel and algorithm choice per shape)",
    )
    run.add_argument(
        "--warmup-size",
        type=int,
        default=d.warmup_size,
        help="image size of the full warm-up (default %(default)s)",
    )
    batch = parser.add_argument_group("dynamic batching")
    batch.add_argument(
        "--max-batch", type=int, default=d.max_batch, help="largest batch (default %(default)s)"
    )
    batch.add_argument(
        "--max-delay-ms",
        type=float,
        default=d.max_delay_ms,
        help="longest wait of a request for its batch to fill (default %(default)s; 0: no wait)",
    )
    batch.add_argument(
        "--max-queue",
        type=int,
        default=d.max_queue,
        help=(
            "requests waiting or being decoded per batcher (a model direction, or all "
            "targets of a multi-domain model's shared graph) before RESOURCE_EXHAUSTED "
            "(default %(default)s)"
        ),
    )
    batch.add_argument(
        "--instances",
        type=int,
        default=d.instances,
        help="batches of one direction computed at once (default %(default)s)",
    )
    batch.add_argument(
        "--workers",
        type=int,
        default=d.workers,
        help="threads that decode and encode images (default %(default)s)",
    )
    limits = parser.add_argument_group("limits")
    limits.add_argument(
        "--max-image-pixels",
        type=int,
        default=d.max_image_pixels,
        help="largest image (height x width) accepted (default %(default)s)",
    )
    limits.add_argument(
        "--max-batch-pixels",
        type=int,
        default=d.max_batch_pixels,
        help="most pixels (height x width x samples) in one batch: a batch closes early "
        "rather than exceed it, and a larger request runs alone; bounds the memory a batch "
        "of large images takes (default %(default)s: eight 256x256 images, two 512x512; "
        "0: no limit)",
    )
    limits.add_argument(
        "--max-samples",
        type=int,
        default=d.max_samples,
        help="largest num_samples of a multimodal request (default %(default)s)",
    )
    sec = parser.add_argument_group("security")
    sec.add_argument(
        "--token-file",
        type=Path,
        default=None,
        help="require 'authorization: Bearer <token>' with the token in this file "
        "(or set I2I_SERVE_TOKEN); health and reflection stay open for probes",
    )
    sec.add_argument("--tls-cert", type=Path, default=None, help="server certificate (PEM)")
    sec.add_argument("--tls-key", type=Path, default=None, help="server private key (PEM)")
    sec.add_argument(
        "--tls-client-ca",
        type=Path,
        default=None,
        help="require client certificates signed by this CA (mutual TLS)",
    )
    life = parser.add_argument_group("lifecycle and logs")
    life.add_argument(
        "--grace-seconds",
        type=float,
        default=d.grace_seconds,
        help="on SIGTERM, how long accepted requests may take to finish (default %(default)s)",
    )
    life.add_argument(
        "--drain-delay-s",
        type=float,
        default=d.drain_delay_s,
        help="on SIGTERM, go NOT_SERVING and keep answering new calls with UNAVAILABLE this "
        "long before the port closes, while load balancers and clients stop sending "
        "(Kubernetes endpoint removal); accepted requests finish meanwhile "
        "(default %(default)s)",
    )
    life.add_argument("--log-format", choices=("text", "json"), default=d.log_format)
    life.add_argument("--log-level", default=d.log_level, help="DEBUG, INFO, WARNING, ERROR")
    parser.epilog = (parser.epilog + "\n\n" if parser.epilog else "") + (
        "Every flag can also be set in the environment as I2I_SERVE_<FLAG> (for example "
        "I2I_SERVE_MAX_BATCH=16, I2I_SERVE_MODEL=a,b:2); the command line wins. The token "
        "comes from --token-file or I2I_SERVE_TOKEN."
    )
    _env_defaults(parser, os.environ if environ is None else environ)


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    """Build the config from parsed flags; reads the token file or I2I_SERVE_TOKEN."""
    token = None
    if args.token_file is not None:
        try:
            token = args.token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ServerConfigError(f"--token-file {args.token_file}: {exc.strerror}") from None
    elif os.environ.get("I2I_SERVE_TOKEN"):
        token = os.environ["I2I_SERVE_TOKEN"].strip()
    for flag in ("tls_cert", "tls_key", "tls_client_ca"):
        path = getattr(args, flag)
        if path is not None and not path.is_file():
            raise ServerConfigError(f"--{flag.replace('_', '-')} {path}: no such file")
    return ServerConfig(
        repository=args.repository,
        models=tuple(ModelSelection.parse(m) for m in args.model),
        host=args.host,
        port=args.port,
        metrics_port=None if args.metrics_port < 0 else args.metrics_port,
        metrics_host=args.metrics_host,
        backend=args.backend,
        precision=args.precision,
        device_id=args.device_id,
        threads=args.threads,
        max_batch=args.max_batch,
        max_delay_ms=args.max_delay_ms,
        max_queue=args.max_queue,
        instances=args.instances,
        workers=args.workers,
        max_concurrent_rpcs=args.max_concurrent_rpcs,
        max_connection_age_s=args.max_connection_age_s,
        max_message_mb=args.max_message_mb,
        max_image_pixels=args.max_image_pixels,
        max_samples=args.max_samples,
        warmup=args.warmup,
        max_batch_pixels=args.max_batch_pixels,
        warmup_size=args.warmup_size,
        grace_seconds=args.grace_seconds,
        drain_delay_s=args.drain_delay_s,
        token=token,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        log_format=args.log_format,
        log_level=args.log_level,
    )
