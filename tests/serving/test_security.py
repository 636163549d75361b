"""TLS, mutual TLS and bearer tokens against a real server (certificates made with openssl)."""

from __future__ import annotations

import shutil
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from i2i.client import probe
from i2i.v1 import translator_pb2 as pb
from i2i.v1 import translator_pb2_grpc as pb_grpc
from tests.serving.conftest import MODEL, png_bytes, sample_image

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")


def request() -> pb.TranslateRequest:
    return pb.TranslateRequest(
        model=MODEL, direction="A2B", image=pb.Image(encoded=png_bytes(sample_image()))
    )


def secure_stub(target: str, certs: Path, client_cert: bool) -> pb_grpc.TranslatorStub:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(certs / "ca.pem").read_bytes(),
        private_key=(certs / "client.key").read_bytes() if client_cert else None,
        certificate_chain=(certs / "client.pem").read_bytes() if client_cert else None,
    )
    return pb_grpc.TranslatorStub(grpc.secure_channel(target, credentials))


def test_tls(start_server, certificates):
    server = start_server(tls_cert=certificates / "server.pem", tls_key=certificates / "server.key")
    assert (
        secure_stub(server.target, certificates, client_cert=False)
        .Translate(request(), timeout=30)
        .images
    )
    with pytest.raises(grpc.RpcError) as caught:  # plaintext cannot talk to a TLS port
        server.stub().Translate(request(), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_needs_a_client_certificate(start_server, certificates):
    server = start_server(
        tls_cert=certificates / "server.pem",
        tls_key=certificates / "server.key",
        tls_client_ca=certificates / "ca.pem",
    )
    assert (
        secure_stub(server.target, certificates, client_cert=True)
        .Translate(request(), timeout=30)
        .images
    )
    with pytest.raises(grpc.RpcError) as caught:
        secure_stub(server.target, certificates, client_cert=False).Translate(request(), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    # The container's health probe can present a client certificate too.
    ca = ["--server", server.target, "--tls-ca", str(certificates / "ca.pem")]
    mine = [
        "--tls-cert",
        str(certificates / "client.pem"),
        "--tls-key",
        str(certificates / "client.key"),
    ]
    assert probe.main([*ca, *mine], environ={}) == 0
    assert probe.main(ca, environ={}) == 1


def test_bearer_token(start_server):
    server = start_server(token="s3cret")
    stub = server.stub()
    for metadata in ((), (("authorization", "Bearer wrong"),), (("authorization", "s3cret"),)):
        with pytest.raises(grpc.RpcError) as caught:
            stub.Translate(request(), timeout=10, metadata=metadata)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "Bearer" in caught.value.details()
    with pytest.raises(grpc.RpcError) as caught:  # streams too
        list(stub.TranslateStream(iter([request()]), timeout=10))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    good = (("authorization", "Bearer s3cret"),)
    assert stub.Translate(request(), timeout=30, metadata=good).images
    # The scheme is case-insensitive (RFC 7235); the token is not.
    for scheme in ("bearer", "BEARER", "bEaReR"):
        metadata = (("authorization", f"{scheme} s3cret"),)
        assert stub.ListModels(pb.ListModelsRequest(), timeout=10, metadata=metadata).models
    wrong_case = (("authorization", "Bearer S3CRET"),)
    with pytest.raises(grpc.RpcError) as caught:
        stub.ListModels(pb.ListModelsRequest(), timeout=10, metadata=wrong_case)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert stub.ListModels(pb.ListModelsRequest(), timeout=10, metadata=good).models
    # Probes carry no token: health stays open.
    with server.channel() as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
