"""Make Open Inference Protocol calls with NVIDIA's `tritonclient` and report what it parsed.

Runs with the interpreter of a virtualenv that holds `tritonclient[grpc]` and numpy (it pins
protobuf below 7, which i2i cannot share), started by tests/serving/test_tritonclient.py:

    python oip_calls.py PLAN.json

PLAN.json: ``{"url": "127.0.0.1:PORT", "out": "FOLDER", "calls": [CALL, ...]}``, a CALL
``{"id": ..., "op": ..., ...}`` with op one of server_live, server_ready, server_metadata,
model_ready, model_metadata, model_config (``model``, optional ``version``), infer
(``model``, ``inputs`` ``[{"name", "datatype", "npy"}]``, optional ``version``,
``outputs``, ``parameters``, ``request_id``), aio_infer (the same through tritonclient's
asyncio client, as benchmarks/serve.py drives servers) and stream (``requests``: a list of
infer calls sent over one ModelStreamInfer stream). Prints ``{id: {"ok": VALUE}}`` or
``{id: {"error": {"status": ..., "message": ...}}}`` as JSON; the output tensors of infer
calls are written to FOLDER as ``<id>.<output>.npy`` (stream: ``<id>.<n>.<output>.npy``).
Imports nothing from i2i.
"""

from __future__ import annotations

import asyncio
import json
import queue
import sys
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as triton
import tritonclient.grpc.aio as triton_aio
from tritonclient.utils import InferenceServerException


def infer_inputs(call: dict[str, Any]) -> list[triton.InferInput]:
    """The call's tensors from .npy files, as raw bytes (set_data_from_numpy)."""
    inputs = []
    for spec in call["inputs"]:
        array = np.load(spec["npy"])
        tensor = triton.InferInput(spec["name"], list(array.shape), spec["datatype"])
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def infer_outputs(call: dict[str, Any]) -> list[triton.InferRequestedOutput] | None:
    names = call.get("outputs")
    return None if names is None else [triton.InferRequestedOutput(n) for n in names]


def save_result(result: triton.InferResult, out: Path, stem: str) -> dict[str, Any]:
    """The reply as tritonclient parses it; each output tensor saved as <stem>.<name>.npy."""
    reply = result.get_response(as_json=True)
    saved = {}
    for output in reply.get("outputs", []):
        array = result.as_numpy(output["name"])
        path = out / f"{stem}.{output['name']}.npy"
        np.save(path, array)
        saved[output["name"]] = {"npy": str(path), "dtype": str(array.dtype), "shape": array.shape}
    reply.pop("raw_output_contents", None)
    return {"reply": reply, "outputs": saved}


def stream(client: triton.InferenceServerClient, call: dict[str, Any], out: Path) -> Any:
    """Send every request over one ModelStreamInfer stream; the replies in arrival order."""
    replies: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: replies.put((result, error)))
    try:
        for request in call["requests"]:
            client.async_stream_infer(
                request["model"],
                infer_inputs(request),
                model_version=request.get("version", ""),
                outputs=infer_outputs(request),
                request_id=request.get("request_id", ""),
                parameters=request.get("parameters"),
            )
        answers = []
        for n in range(len(call["requests"])):
            result, error = replies.get(timeout=60)
            if error is not None:
                answers.append({"error": {"status": error.status(), "message": error.message()}})
            else:
                answers.append({"ok": save_result(result, out, f"{call['id']}.{n}")})
        return answers
    finally:
        client.stop_stream()


async def aio_infer(url: str, call: dict[str, Any], out: Path) -> dict[str, Any]:
    """One infer call through tritonclient's asyncio client."""
    async with triton_aio.InferenceServerClient(url) as client:
        result = await client.infer(
            call["model"],
            infer_inputs(call),
            model_version=call.get("version", ""),
            outputs=infer_outputs(call),
            request_id=call.get("request_id", ""),
            parameters=call.get("parameters"),
            client_timeout=60,
        )
    return save_result(result, out, call["id"])


def run(client: triton.InferenceServerClient, url: str, call: dict[str, Any], out: Path) -> Any:
    """One call's value as JSON-able data (raises InferenceServerException on errors)."""
    op, model, version = call["op"], call.get("model", ""), call.get("version", "")
    if op == "server_live":
        return client.is_server_live()
    if op == "server_ready":
        return client.is_server_ready()
    if op == "server_metadata":
        return client.get_server_metadata(as_json=True)
    if op == "model_ready":
        return client.is_model_ready(model, version)
    if op == "model_metadata":
        return client.get_model_metadata(model, version, as_json=True)
    if op == "model_config":
        return client.get_model_config(model, version, as_json=True)
    if op == "infer":
        result = client.infer(
            model,
            infer_inputs(call),
            model_version=version,
            outputs=infer_outputs(call),
            request_id=call.get("request_id", ""),
            parameters=call.get("parameters"),
            client_timeout=60,
        )
        return save_result(result, out, call["id"])
    if op == "aio_infer":
        return asyncio.run(aio_infer(url, call, out))
    if op == "stream":
        return stream(client, call, out)
    raise SystemExit(f"unknown op {op!r}")


def main() -> None:
    plan = json.loads(Path(sys.argv[1]).read_text())
    out = Path(plan["out"])
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    with triton.InferenceServerClient(plan["url"]) as client:
        for call in plan["calls"]:
            try:
                results[call["id"]] = {"ok": run(client, plan["url"], call, out)}
            except InferenceServerException as exc:
                error = {"status": exc.status(), "message": exc.message()}
                results[call["id"]] = {"error": error}
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
