"""The generated protocol modules in src/i2i/v1 are exactly what protos/ generates."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ("translator_pb2.py", "translator_pb2.pyi", "translator_pb2_grpc.py")


def test_generated_modules_are_up_to_date(tmp_path):
    from grpc_tools import protoc  # in the [dev] extra

    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{ROOT / 'protos'}",
            f"--python_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            str(ROOT / "protos" / "i2i" / "v1" / "translator.proto"),
        ]
    )
    assert status == 0
    for name in GENERATED:
        fresh = (tmp_path / "i2i" / "v1" / name).read_text()
        committed = (ROOT / "src" / "i2i" / "v1" / name).read_text()
        assert fresh == committed, f"src/i2i/v1/{name} is stale: run `make protos` and commit"


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
