"""The PyTriton side of benchmarks/serve.py: Triton's server in front of one ONNX Runtime session.

Runs with the interpreter of a separate virtualenv that holds nvidia-pytriton, onnxruntime
and numpy (no torch, no i2i), started by ``benchmarks/serve.py --pytriton-python ...``:

    python3 -m venv /work/pytriton-venv
    /work/pytriton-venv/bin/pip install nvidia-pytriton onnxruntime numpy
    /work/pytriton-venv/bin/python benchmarks/pytriton_server.py --onnx A2B.onnx --grpc-port 8001

The model is served the way PyTriton's documentation shows: an infer function wrapped in
``@batch`` (Triton's dynamic batcher stacks the requests, the function runs them as one
batch), ``ModelConfig(max_batch_size=...)`` and ``DynamicBatcher(max_queue_delay_microseconds=
...)``, the same knobs i2i's batcher has. The ONNX Runtime session gets the settings of
i2i's ONNX Runtime backend (all graph optimisations, the same intra-op threads). A line
containing ``SERVING`` goes to stderr when the model is loaded; SIGTERM or SIGINT stops it.
Triton's statistics endpoint (the load generator reads the batch sizes from it) needs
PyTriton's access token: set ``PYTRITON_ACCESS_TOKEN`` to choose it (default: a random one).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sysconfig
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import onnxruntime as ort
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

from machine import PYTRITON_PACKAGES, describe, identity

log = logging.getLogger("pytriton_server")


def add_libdir_to_library_path() -> None:
    """Put this interpreter's LIBDIR on LD_LIBRARY_PATH for Triton's Python-backend stub.

    The stub process that PyTriton starts links against libpython3.x.so; on interpreters
    built outside the system (pyenv, conda) the loader does not find it without this.
    """
    libdir = sysconfig.get_config_var("LIBDIR")
    paths = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    if libdir and libdir not in paths:
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join([libdir, *paths])


def make_session(onnx: str, threads: int | None) -> ort.InferenceSession:
    """The session as i2i's ONNX Runtime CPU backend builds it."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(onnx, options, providers=["CPUExecutionProvider"])


def make_infer(session: ort.InferenceSession) -> Callable[..., dict[str, np.ndarray]]:
    """A batched infer function: (N, H, W, 3) uint8 in, the same shape out."""
    input_name = session.get_inputs()[0].name
    output_name = session.get_outputs()[0].name

    @batch
    def infer(image: np.ndarray) -> dict[str, np.ndarray]:
        return {"translated": session.run([output_name], {input_name: image})[0]}

    return infer


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--onnx", required=True, help="the translator's ONNX file")
    p.add_argument(
        "--model",
        default="tiny_A2B",
        help="the model's name in Triton; serve.py passes i2i's v2 name, <model>_<direction>, "
        "so one tritonclient load generator calls both servers alike",
    )
    p.add_argument("--host", default="127.0.0.1", help="address the gRPC and HTTP ports bind")
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--http-port", type=int, default=8000, help="PyTriton loads models over it")
    p.add_argument("--max-batch", type=int, default=8, help="ModelConfig.max_batch_size")
    p.add_argument("--max-delay-ms", type=float, default=2.0, help="the batcher's queue delay")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    args = p.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    add_libdir_to_library_path()
    threads = {"onnxruntime intra-op": args.threads or "its default"}
    log.info("%s", describe(identity(threads, packages=PYTRITON_PACKAGES)))

    session = make_session(args.onnx, args.threads)
    config = TritonConfig(
        grpc_address=args.host,
        grpc_port=args.grpc_port,
        http_address=args.host,
        http_port=args.http_port,
        allow_metrics=False,  # i2i runs with --metrics-port -1 in the benchmark
        log_verbose=0,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    security = TritonSecurityConfig(access_token=os.environ.get("PYTRITON_ACCESS_TOKEN"))
    with Triton(config=config, security_config=security) as triton:
        triton.bind(
            model_name=args.model,
            infer_func=make_infer(session),
            inputs=[Tensor(name="image", dtype=np.uint8, shape=(-1, -1, 3))],
            outputs=[Tensor(name="translated", dtype=np.uint8, shape=(-1, -1, 3))],
            config=ModelConfig(
                max_batch_size=args.max_batch,
                batcher=DynamicBatcher(max_queue_delay_microseconds=int(args.max_delay_ms * 1000)),
            ),
        )
        triton.run()
        log.info(
            "SERVING %s on %s:%d (max batch %d, delay %.1f ms, %s threads)",
            args.model,
            args.host,
            args.grpc_port,
            args.max_batch,
            args.max_delay_ms,
            args.threads or "default",
        )
        stop.wait()
        log.info("stopping")


if __name__ == "__main__":
    main()
