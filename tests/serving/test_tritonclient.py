"""NVIDIA's own `tritonclient[grpc]` against a real i2i server: the Open Inference Protocol.

`tritonclient` pins protobuf below 7 and i2i needs 7, so it lives in a virtualenv of its own,
made once per session (``python -m venv`` + ``pip install tritonclient[grpc] numpy``, about
30-60 s) or given by ``$I2I_TRITONCLIENT_VENV`` (a venv folder that has both). If none can be
made the tests skip, saying why; under ``CI`` they fail instead. The calls are made by
tests/serving/tritonclient_scripts/oip_calls.py, run by that venv's interpreter, against a
server on 127.0.0.1 in this process; the checks compare what tritonclient parsed with the
ONNX graphs run directly and with Translate. The expected status codes are the ones Triton
itself returns for the same mistakes (tritonserver 2.51 through nvidia-pytriton 0.7.0:
INVALID_ARGUMENT for a wrong datatype, shape, input or output name or a version that is no
number, NOT_FOUND for an unknown model or version, and `is_model_ready` False for an unknown
model or version).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from i2i.client import Client
from tests.conftest import MultimodalModel
from tests.serving.conftest import MODEL, RunningServer, sample_image, server_config
from tests.serving.test_multimodal import ort_styled
from tests.serving.test_server import ort_translate

VENV_VARIABLE = "I2I_TRITONCLIENT_VENV"
PACKAGES = ("tritonclient[grpc]", "numpy")
SCRIPT = Path(__file__).with_name("tritonclient_scripts") / "oip_calls.py"
DATATYPES = {np.dtype(np.uint8): "UINT8", np.dtype(np.float32): "FP32",
             np.dtype(np.float64): "FP64", np.dtype(np.int64): "INT64"}  # fmt: skip
TINY_A2B = f"{MODEL}_A2B"  # the contract's v2 name: <model>_<direction>
MAX_BATCH = 4  # server_config's


def unavailable(message: str) -> None:
    """Skip with `message`; fail under CI, which must run these tests."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


@pytest.fixture(scope="session")
def tritonclient_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The interpreter of a venv with tritonclient[grpc] and numpy: given, or made now."""
    given = os.environ.get(VENV_VARIABLE)
    if given:
        python = venv_python(Path(given))
        how = f"${VENV_VARIABLE}={given}"
    else:
        venv = tmp_path_factory.mktemp("tritonclient-venv")
        python = venv_python(venv)
        how = f"a venv made in {venv}"
        for command in (
            [sys.executable, "-m", "venv", str(venv)],
            [str(python), "-m", "pip", "install", "--quiet", *PACKAGES],
        ):
            try:
                done = subprocess.run(command, capture_output=True, text=True, timeout=900)
            except (OSError, subprocess.TimeoutExpired) as exc:
                unavailable(f"cannot make the tritonclient venv: {' '.join(command)}: {exc}")
            if done.returncode != 0:
                unavailable(
                    f"cannot make the tritonclient venv: {' '.join(command)} exited "
                    f"{done.returncode}:\n{(done.stdout + done.stderr)[-2000:]}"
                )
    try:
        check = subprocess.run(
            [str(python), "-c", "import tritonclient.grpc, numpy"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        unavailable(f"no python with tritonclient.grpc in {how}: {exc}")
    if check.returncode != 0:
        unavailable(f"tritonclient.grpc does not import with {how}:\n{check.stderr[-2000:]}")
    return python


class Tritonclient:
    """Runs oip_calls.py with the tritonclient venv against one server; the parsed results."""

    def __init__(self, python: Path, target: str, folder: Path) -> None:
        self.python, self.target, self.folder = python, target, folder
        self.runs = 0

    def tensors(self, call: dict[str, Any], stem: str) -> dict[str, Any]:
        """The call with its numpy `inputs` ({name: array}) saved as .npy files."""
        inputs = []
        for name, array in call.get("inputs", {}).items():
            path = self.folder / f"{stem}.in.{name}.npy"
            np.save(path, array)
            inputs.append({"name": name, "datatype": DATATYPES[array.dtype], "npy": str(path)})
        return {**call, "inputs": inputs}

    def __call__(self, **calls: dict[str, Any]) -> dict[str, Any]:
        """Make the calls (keyword: the call's id) in order; {id: {"ok"|"error": ...}}."""
        self.runs += 1
        plan_calls = []
        for id_, call in calls.items():
            call = self.tensors(call, f"{self.runs}.{id_}")
            if call["op"] == "stream":
                call["requests"] = [
                    self.tensors(r, f"{self.runs}.{id_}.{n}")
                    for n, r in enumerate(call["requests"])
                ]
            plan_calls.append({"id": id_, **call})
        plan = self.folder / f"plan-{self.runs}.json"
        out = self.folder / f"out-{self.runs}"
        plan.write_text(json.dumps({"url": self.target, "out": str(out), "calls": plan_calls}))
        done = subprocess.run(
            [str(self.python), str(SCRIPT), str(plan)], capture_output=True, text=True, timeout=180
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return dict(json.loads(done.stdout))


def ok(result: dict[str, Any]) -> Any:
    """The value of a call that must have succeeded."""
    assert "ok" in result, result.get("error")
    return result["ok"]


def error(result: dict[str, Any]) -> tuple[str, str]:
    """(status, message) of a call that must have failed, as InferenceServerException has them."""
    assert "error" in result, f"expected an error, got {result}"
    return result["error"]["status"], result["error"]["message"]


def output(result: dict[str, Any], name: str = "translated") -> np.ndarray:
    """An output tensor of a successful infer call, as tritonclient's as_numpy gave it."""
    return np.load(ok(result)["outputs"][name]["npy"])


def infer(model: str, **inputs: np.ndarray) -> dict[str, Any]:
    return {"op": "infer", "model": model, "inputs": inputs}


@pytest.fixture
def tritonclient(
    tritonclient_python: Path, shared_server: RunningServer, tmp_path: Path
) -> Tritonclient:
    """tritonclient against the module's server on the tiny model (max batch 4)."""
    assert shared_server.server.config.max_batch == MAX_BATCH
    return Tritonclient(tritonclient_python, shared_server.target, tmp_path)


def ort_batch(repository: Path, direction: str, batch: np.ndarray) -> np.ndarray:
    """The tiny model's FP32 graph run on each image alone: (N, H, W, 3) -> (N, H, W, 3)."""
    return np.stack([ort_translate(repository, direction, image) for image in batch])


# --- health and metadata ----------------------------------------------------------------------


def test_live_ready_and_server_metadata(tritonclient):
    got = tritonclient(
        live={"op": "server_live"},
        ready={"op": "server_ready"},
        model_ready={"op": "model_ready", "model": TINY_A2B},
        version_ready={"op": "model_ready", "model": f"{MODEL}_B2A", "version": "1"},
        metadata={"op": "server_metadata"},
    )
    assert ok(got["live"]) is True
    assert ok(got["ready"]) is True
    assert ok(got["model_ready"]) is True
    assert ok(got["version_ready"]) is True
    metadata = ok(got["metadata"])
    assert metadata["name"] and metadata["version"]


def test_model_ready_of_an_unknown_model_is_false_as_in_triton(tritonclient):
    # Triton answers ModelReady for a model it does not have with ready=false, not an error:
    # tritonclient's is_model_ready returns False (readiness probes and KServe rely on it).
    got = tritonclient(
        unknown={"op": "model_ready", "model": "nope_A2B"},
        version={"op": "model_ready", "model": TINY_A2B, "version": "7"},
    )
    assert ok(got["unknown"]) is False
    assert ok(got["version"]) is False


def test_model_metadata_and_config_as_tritonclient_parses_them(tritonclient):
    got = tritonclient(
        metadata={"op": "model_metadata", "model": TINY_A2B},
        versioned={"op": "model_metadata", "model": f"{MODEL}_B2A", "version": "1"},
        config={"op": "model_config", "model": TINY_A2B},
    )
    metadata = ok(got["metadata"])
    assert metadata["name"] == TINY_A2B
    assert metadata["versions"] == ["1"]
    assert metadata["platform"]
    # as_json gives int64 fields as strings, as Triton's own metadata does
    assert metadata["inputs"] == [
        {"name": "image", "datatype": "UINT8", "shape": ["-1", "-1", "-1", "3"]}
    ]
    assert metadata["outputs"] == [
        {"name": "translated", "datatype": "UINT8", "shape": ["-1", "-1", "-1", "3"]}
    ]
    assert ok(got["versioned"])["name"] == f"{MODEL}_B2A"
    config = ok(got["config"])["config"]
    assert config["name"] == TINY_A2B
    assert config["max_batch_size"] == MAX_BATCH  # > 0: dims below exclude the batch
    assert [(t["name"], t["data_type"], t["dims"]) for t in config["input"]] == [
        ("image", "TYPE_UINT8", ["-1", "-1", "3"])
    ]
    assert [(t["name"], t["data_type"], t["dims"]) for t in config["output"]] == [
        ("translated", "TYPE_UINT8", ["-1", "-1", "3"])
    ]


# --- inference --------------------------------------------------------------------------------


def test_infer_raw_bytes_equals_onnxruntime(tritonclient, tiny_repository):
    pixels = sample_image(32, 48, seed=1)
    got = tritonclient(
        a2b={**infer(TINY_A2B, image=pixels[None]), "request_id": "r-7"},
        b2a={**infer(f"{MODEL}_B2A", image=pixels[None]), "version": "1"},
        aio={**infer(TINY_A2B, image=pixels[None]), "op": "aio_infer"},  # serve.py's client
    )
    reply = ok(got["a2b"])["reply"]
    assert (reply["model_name"], reply["model_version"], reply["id"]) == (TINY_A2B, "1", "r-7")
    assert ok(got["a2b"])["outputs"]["translated"]["dtype"] == "uint8"
    np.testing.assert_array_equal(
        output(got["a2b"]), ort_translate(tiny_repository, "A2B", pixels)[None]
    )
    np.testing.assert_array_equal(
        output(got["b2a"]), ort_translate(tiny_repository, "B2A", pixels)[None]
    )
    assert output(got["aio"]).tobytes() == output(got["a2b"]).tobytes()


def test_a_batch_of_several_images_in_one_request(tritonclient, tiny_repository):
    batch = np.stack([sample_image(32, 32, seed=20 + i) for i in range(3)])
    got = tritonclient(batch=infer(TINY_A2B, image=batch))
    out = output(got["batch"])
    assert out.shape == (3, 32, 32, 3)
    np.testing.assert_array_equal(out, ort_batch(tiny_repository, "A2B", batch))
    assert not np.array_equal(out[0], out[1])


def test_translate_and_model_infer_give_the_same_bytes(tritonclient, shared_server):
    # 30x34 is no multiple of 4: both paths pad it (the default size policy) the same way.
    batch = np.stack([sample_image(30, 34, seed=30 + i) for i in range(3)])
    single = sample_image(40, 36, seed=40)
    got = tritonclient(
        batch=infer(TINY_A2B, image=batch), single=infer(TINY_A2B, image=single[None])
    )
    with Client(shared_server.target, timeout=30) as client:
        translated = [
            client.translate(image, model=MODEL, direction="A2B", output_format="raw").images[0]
            for image in [*batch, single]
        ]
    assert output(got["batch"]).tobytes() == np.stack(translated[:3]).tobytes()
    assert output(got["single"]).tobytes() == translated[3][None].tobytes()


def test_stream_infer_answers_every_request_in_order(tritonclient, tiny_repository):
    frames = [sample_image(32, 32, seed=50 + i) for i in range(4)]
    got = tritonclient(
        stream={
            "op": "stream",
            "requests": [
                {**infer(TINY_A2B, image=f[None]), "request_id": f"frame-{i}"}
                for i, f in enumerate(frames)
            ],
        }
    )
    replies = ok(got["stream"])
    assert len(replies) == len(frames)
    assert [ok(r)["reply"]["id"] for r in replies] == [f"frame-{i}" for i in range(4)]
    for frame, reply in zip(frames, replies, strict=True):
        expected = ort_translate(tiny_repository, "A2B", frame)[None]
        np.testing.assert_array_equal(output(reply), expected)


def test_stream_errors_answer_the_request_and_the_stream_goes_on(tritonclient, tiny_repository):
    pixels = sample_image(32, 32, seed=55)
    got = tritonclient(
        stream={
            "op": "stream",
            "requests": [
                infer("nope_A2B", image=pixels[None]),
                infer(TINY_A2B, image=pixels[None].astype(np.float32)),
                infer(TINY_A2B, image=pixels[None]),
            ],
        }
    )
    unknown, wrong_type, fine = ok(got["stream"])
    # As from Triton: the stream's error_message, which tritonclient gives without a status.
    assert "nope_A2B" in error(unknown)[1]
    assert "FP32" in error(wrong_type)[1] and "UINT8" in error(wrong_type)[1]
    np.testing.assert_array_equal(output(fine), ort_translate(tiny_repository, "A2B", pixels)[None])


# --- errors: the status codes Triton gives for the same mistakes ------------------------------


def test_bad_inputs_are_invalid_argument(tritonclient):
    pixels = sample_image(32, 32, seed=60)[None]
    got = tritonclient(
        dtype=infer(TINY_A2B, image=pixels.astype(np.float32)),
        channels=infer(TINY_A2B, image=pixels[..., :2].copy()),
        rank=infer(TINY_A2B, image=pixels[0]),
        name=infer(TINY_A2B, picture=pixels),
        missing=infer(TINY_A2B),
        output={**infer(TINY_A2B, image=pixels), "outputs": ["nah"]},
        version={**infer(TINY_A2B, image=pixels), "version": "x"},  # Triton: an integer > 0
    )
    for case in got:
        status, message = error(got[case])
        assert status == "StatusCode.INVALID_ARGUMENT", (case, message)
    assert "FP32" in error(got["dtype"])[1] and "UINT8" in error(got["dtype"])[1]
    assert "image" in error(got["channels"])[1]
    assert "picture" in error(got["name"])[1]
    assert "image" in error(got["missing"])[1]
    assert "nah" in error(got["output"])[1]
    assert "'x'" in error(got["version"])[1]


def test_unknown_model_or_version_is_not_found(tritonclient):
    pixels = sample_image(32, 32, seed=61)[None]
    got = tritonclient(
        infer=infer("nope_A2B", image=pixels),
        plain_name=infer(MODEL, image=pixels),  # the i2i name without a direction
        version={**infer(TINY_A2B, image=pixels), "version": "7"},
        metadata={"op": "model_metadata", "model": "nope_A2B"},
        config={"op": "model_config", "model": "nope_A2B"},
    )
    for case in got:
        status, message = error(got[case])
        assert status == "StatusCode.NOT_FOUND", (case, message)
    assert "nope_A2B" in error(got["infer"])[1]
    assert "7" in error(got["version"])[1]


def test_version_zero_and_an_empty_name_are_not_found_as_in_triton(tritonclient):
    # Triton: no model has version 0 or the name "" (NOT_FOUND, "Request for unknown model").
    pixels = sample_image(32, 32, seed=62)[None]
    got = tritonclient(
        zero={**infer(TINY_A2B, image=pixels), "version": "0"},
        empty=infer("", image=pixels),
    )
    answers = {case: error(got[case]) for case in got}
    assert {case: status for case, (status, _) in answers.items()} == {
        "zero": "StatusCode.NOT_FOUND",
        "empty": "StatusCode.NOT_FOUND",
    }, answers


# --- a multimodal model: the FP32 style input -------------------------------------------------


@pytest.fixture(scope="module")
def styled_server(multimodal_model: MultimodalModel) -> Iterator[RunningServer]:
    server = RunningServer(server_config(multimodal_model.repository))
    yield server
    server.close()


def test_multimodal_style_input(
    tritonclient_python, styled_server, multimodal_model, tmp_path
):  # fmt: skip
    call = Tritonclient(tritonclient_python, styled_server.target, tmp_path)
    name, size = f"{multimodal_model.name}_A2B", multimodal_model.style_dim
    batch = np.stack([sample_image(32, 36, seed=70 + i) for i in range(2)])
    codes = np.random.default_rng(3).standard_normal((2, size)).astype(np.float32)
    seeded = {**infer(name, image=batch[:1]), "parameters": {"style_seed": 7}}
    got = call(
        metadata={"op": "model_metadata", "model": name},
        styled=infer(name, image=batch, style=codes),
        seeded=seeded,
        again=seeded,
        wrong_size=infer(name, image=batch, style=codes[:, :-1].copy()),
        wrong_type=infer(name, image=batch, style=codes.astype(np.float64)),
    )
    inputs = {t["name"]: t for t in ok(got["metadata"])["inputs"]}
    assert inputs["style"] == {"name": "style", "datatype": "FP32", "shape": ["-1", str(size)]}
    assert inputs["image"]["datatype"] == "UINT8"
    expected = [
        ort_styled(multimodal_model, "A2B", b, c[None])[0]
        for b, c in zip(batch, codes, strict=True)
    ]
    np.testing.assert_array_equal(output(got["styled"]), np.stack(expected))
    # A seed is a style, as in Translate: the same bytes each time and through Translate.
    assert output(got["seeded"]).tobytes() == output(got["again"]).tobytes()
    with Client(styled_server.target, timeout=30) as client:
        by_code = client.translate(
            batch[1], model=multimodal_model.name, direction="A2B", style_code=codes[1].tolist(),
            output_format="raw",
        ).images[0]  # fmt: skip
        by_seed = client.translate(
            batch[0], model=multimodal_model.name, direction="A2B", style_seed=7,
            output_format="raw",
        ).images[0]  # fmt: skip
    assert output(got["styled"])[1].tobytes() == by_code.tobytes()
    assert output(got["seeded"])[0].tobytes() == by_seed.tobytes()
    for case in ("wrong_size", "wrong_type"):
        status, message = error(got[case])
        assert status == "StatusCode.INVALID_ARGUMENT", (case, message)
        assert "style" in message
