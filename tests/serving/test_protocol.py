"""The generated protocol modules in src/i2i/v1 and src/i2i/oip are exactly what protos/
generates."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")
PROTOS = {"v1": ("translator",), "oip": ("model_config", "grpc_service")}


@pytest.mark.parametrize("package", sorted(PROTOS))
def test_generated_modules_are_up_to_date(tmp_path, package):
    from grpc_tools import protoc  # in the [dev] extra

    sources = [str(ROOT / "protos" / "i2i" / package / f"{n}.proto") for n in PROTOS[package]]
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{ROOT / 'protos'}",
            f"--python_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            *sources,
        ]
    )
    assert status == 0
    for stem in PROTOS[package]:
        for suffix in SUFFIXES:
            name = f"{stem}{suffix}"
            fresh = (tmp_path / "i2i" / package / name).read_text()
            committed = (ROOT / "src" / "i2i" / package / name).read_text()
            assert fresh == committed, (
                f"src/i2i/{package}/{name} is stale: run `make protos` and commit"
            )


def test_open_inference_protocol_is_tritons():
    """The vendored service keeps Triton's package and methods, which its clients call."""
    from i2i.oip import grpc_service_pb2 as oip

    service = oip.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert service.full_name == "inference.GRPCInferenceService"
    names = {m.name for m in service.methods}
    assert {"ServerLive", "ServerReady", "ServerMetadata", "ModelReady", "ModelMetadata"} <= names
    assert {"ModelConfig", "ModelInfer", "ModelStreamInfer"} <= names


def test_service_shape():
    from i2i.v1 import translator_pb2 as pb

    service = pb.DESCRIPTOR.services_by_name["Translator"]
    methods = {m.name: (m.client_streaming, m.server_streaming) for m in service.methods}
    assert methods == {
        "Translate": (False, False),
        "TranslateStream": (True, True),
        "ListModels": (False, False),
        "GetModel": (False, False),
    }
