"""`python -m i2i.client.probe`: a grpc.health.v1 check for container and orchestrator probes.

Exit 0 only when the server answers SERVING; 1 when it answers anything else or cannot be
reached (the reason on stderr); 2 for a usage error. It imports only grpc, grpc_health and
the standard library, so it stays cheap to run every few seconds (the container's
HEALTHCHECK runs it). With no --server it asks the local server on I2I_SERVE_PORT, the same
variable `i2i-serve` reads its port from::

    python -m i2i.client.probe                     # 127.0.0.1:$I2I_SERVE_PORT (or :8001)
    python -m i2i.client.probe --server gpu-3:8001 --service i2i.v1.Translator
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

DEFAULT_PORT = 8001
SERVING = 0
NOT_SERVING = 1
USAGE = 2
# Addresses a server binds to that a client cannot dial; the probe dials loopback instead.
WILDCARD_HOSTS = ("", "0.0.0.0", "::", "[::]")


def default_server(environ: Mapping[str, str]) -> str:
    """The local server's address from I2I_SERVE_HOST and I2I_SERVE_PORT.

    A wildcard host (0.0.0.0, ::) or none means loopback, 127.0.0.1; no port means 8001.
    """
    host = environ.get("I2I_SERVE_HOST", "").strip()
    if host in WILDCARD_HOSTS:
        host = "127.0.0.1"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 literal
    port = environ.get("I2I_SERVE_PORT", "").strip() or str(DEFAULT_PORT)
    return f"{host}:{port}"


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m i2i.client.probe",
        description="Ask an i2i server's grpc.health.v1 service whether it is SERVING. "
        "Exit status: 0 SERVING, 1 anything else or unreachable, 2 usage error.",
    )
    parser.add_argument(
        "--server",
        default=default_server(environ),
        help="HOST:PORT to ask (default: 127.0.0.1 and I2I_SERVE_PORT, else 127.0.0.1:8001)",
    )
    parser.add_argument(
        "--service",
        default="",
        help='service name to ask about (default "": the whole server)',
    )
    parser.add_argument(
        "--timeout", type=float, default=3.0, help="seconds to wait for the answer (default 3)"
    )
    parser.add_argument(
        "--tls-ca", type=Path, help="CA certificate (PEM) to verify the server with; TLS when set"
    )
    parser.add_argument("--tls-cert", type=Path, help="client certificate (PEM), mutual TLS")
    parser.add_argument("--tls-key", type=Path, help="client private key (PEM), mutual TLS")
    parser.add_argument(
        "--tls-server-name",
        help="name to expect in the server's certificate (default: the host of --server)",
    )
    return parser


def check(
    server: str,
    service: str = "",
    timeout: float = 3.0,
    root_certificates: bytes | None = None,
    server_name: str | None = None,
    certificate_chain: bytes | None = None,
    private_key: bytes | None = None,
) -> str:
    """Ask `server` for the health of `service`; the status name, e.g. "SERVING".

    Args:
        server: "host:port" of the server.
        service: the service to ask about; "" means the server as a whole.
        timeout: deadline of the call in seconds.
        root_certificates: PEM of the CA to trust; TLS when given, plaintext otherwise.
        server_name: the name expected in the server's certificate (TLS only).
        certificate_chain: PEM of the client certificate (mutual TLS).
        private_key: PEM of its private key (mutual TLS).

    Raises:
        grpc.RpcError: the server could not be reached or refused the call.
    """
    if root_certificates is None:
        channel = grpc.insecure_channel(server)
    else:
        options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
        credentials = grpc.ssl_channel_credentials(
            root_certificates=root_certificates,
            private_key=private_key,
            certificate_chain=certificate_chain,
        )
        channel = grpc.secure_channel(server, credentials, options=options)
    with channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout
        )
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run the probe; the exit status (0 SERVING, 1 not serving or unreachable, 2 usage)."""
    parser = build_parser(os.environ if environ is None else environ)
    args = parser.parse_args(argv)  # exits 2 on a usage error
    if not args.timeout > 0:
        parser.error(f"--timeout must be more than 0 seconds, got {args.timeout}")
    if ":" not in args.server:
        parser.error(f"--server {args.server!r}: give HOST:PORT, e.g. 127.0.0.1:8001")
    if args.tls_ca is None and (args.tls_server_name or args.tls_cert or args.tls_key):
        parser.error("--tls-server-name, --tls-cert and --tls-key need --tls-ca")
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together (mutual TLS)")
    pems: dict[str, bytes | None] = {}
    for flag in ("tls_ca", "tls_cert", "tls_key"):
        path = getattr(args, flag)
        try:
            pems[flag] = None if path is None else path.read_bytes()
        except OSError as exc:
            parser.error(f"--{flag.replace('_', '-')} {path}: cannot read it ({exc.strerror})")
    what = f"{args.server} service {args.service!r}" if args.service else args.server
    try:
        status = check(
            args.server,
            args.service,
            args.timeout,
            pems["tls_ca"],
            args.tls_server_name,
            certificate_chain=pems["tls_cert"],
            private_key=pems["tls_key"],
        )
    except grpc.RpcError as exc:
        code = exc.code() if isinstance(exc, grpc.Call) else None
        details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
        name = code.name if code is not None else "ERROR"
        sys.stderr.write(f"{what}: unhealthy: {name}: {details}\n")
        return NOT_SERVING
    sys.stdout.write(f"{status}\n")
    if status != "SERVING":
        sys.stderr.write(f"{what}: unhealthy: the server reports {status}\n")
        return NOT_SERVING
    return SERVING


if __name__ == "__main__":
    sys.exit(main())
