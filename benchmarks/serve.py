"""Serving load benchmark: i2i's gRPC server vs PyTriton on the same ONNX file, and the raw backend.

    python benchmarks/serve.py --pytriton-python /work/pytriton-venv/bin/python
    python benchmarks/serve.py --quick                  # short, i2i only
    python benchmarks/serve.py --repository REPO --model NAME --size 256

By default a tiny CycleGAN (ResNet-6, ``--ngf 4``) is exported into a temporary repository:
with a model this small the server's own work (gRPC, batching, the event loop) dominates,
which is what this benchmark is for. Every target's server is started first and runs for
the whole sweep; then each concurrency C is one round, so that load from other processes
falls on every side of a comparison alike:

1. raw backend: an ONNX Runtime session on the served ONNX file, built as i2i's CPU backend
   builds it, at batch 1 and --max-batch: the ceiling a server can approach;
2. closed-loop load on each target in turn: C workers each send one image, await the
   reply, send again, for --duration s after --warmup s; images/s, p50/p95/p99 latency, the
   mean batch the server formed, its measured compute per batch, and the CPU cores that the
   server (with its children) and the load generator used. Targets: ``i2i`` (dynamic
   batching, called through Translate), ``i2i-nobatch`` (max batch 1), ``i2i-v2`` (a server
   with ``i2i``'s settings, called through the Open Inference Protocol's ModelInfer by the
   client that drives PyTriton), ``pytriton`` (Triton's dynamic batcher in front of an ONNX
   Runtime session in a PyTriton ``@batch`` infer function, benchmarks/pytriton_server.py)
   and ``pytriton-nobatch``.

The machine (benchmarks/machine.py), the load average and, for every point, the cores that
other processes used meanwhile are printed with the tables. Each server is its own process.
The load generator is this file run as a child process
(``--target i2i|v2|pytriton --address ...``): with this interpreter against i2i's Translate,
with the PyTriton venv's interpreter (tritonclient's asyncio gRPC client) against PyTriton
and against i2i's ModelInfer, so every side is driven by the same ``closed_loop``. The v2
model is ``<model>_<direction>`` on both (i2i's v2 name; PyTriton binds its model under the
same name), with input ``image`` and output ``translated``: the tritonclient code is the same
for both, but for where the batch counts come from (Triton's statistics; i2i's Prometheus
metrics, so ``i2i-v2``'s server alone runs its metrics port). That mode needs only numpy
and its client, so the script runs in the PyTriton venv (nvidia-pytriton, onnxruntime,
numpy; no i2i).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np

from exported import export_untrained
from machine import (
    PYTRITON_PACKAGES,
    cpu_snapshot,
    describe,
    identity,
    load_average,
    others_cores,
    process_tree_cpu,
)

TARGETS = ("i2i", "i2i-nobatch", "i2i-v2", "pytriton", "pytriton-nobatch")
TRITONCLIENT_TARGETS = ("i2i-v2", "pytriton", "pytriton-nobatch")  # need --pytriton-python
READY = re.compile(r"(?<![A-Z_])SERVING ")  # both servers log it when ready; not NOT_SERVING
# i2i's metrics that V2Client adds up: images and batches run, seconds of compute.
SUMMED = re.compile(r"(i2i_inference_(?:batch_size|compute_duration_seconds)_(?:sum|count))[{ ]")
# Cumulative (requests, batches, seconds of compute) as the server reports them.
Counts = tuple[float, float, float]


class I2IClient:
    """One raw image per Translate call; batches and compute from the replies."""

    def __init__(self, address: str, model: str, direction: str, pixels: np.ndarray) -> None:
        import grpc

        from i2i.v1 import translator_pb2 as pb
        from i2i.v1 import translator_pb2_grpc as pb_grpc

        self.channel = grpc.aio.insecure_channel(address)
        self.stub = pb_grpc.TranslatorStub(self.channel)
        height, width, channels = pixels.shape
        raw = pb.RawImage(pixels=pixels.tobytes(), height=height, width=width, channels=channels)
        self.request = pb.TranslateRequest(
            model=model,
            direction=direction,
            image=pb.Image(raw=raw),
            output=pb.OutputOptions(format=pb.IMAGE_FORMAT_RAW),
        )
        self.expected = pixels.nbytes
        self.counts_ = [0.0, 0.0, 0.0]

    async def send(self) -> None:
        reply = await self.stub.Translate(self.request, timeout=60)
        if len(reply.images[0].raw.pixels) != self.expected:
            raise RuntimeError(f"reply has {len(reply.images[0].raw.pixels)} bytes")
        share = 1 / max(1, reply.batch_size)  # each image of a batch adds 1/size of it
        self.counts_[0] += 1
        self.counts_[1] += share
        self.counts_[2] += share * reply.timing.compute_ms / 1e3

    async def counts(self) -> Counts:
        return self.counts_[0], self.counts_[1], self.counts_[2]

    async def close(self) -> None:
        await self.channel.close()


def v2_model_name(model: str, direction: str) -> str:
    """i2i-serve's v2 model name (i2i.serving.inference.v2_model_name; the client mode runs
    without i2i, so the one-liner is repeated here)."""
    return f"{model}_{direction}"


class TritonClient:
    """One (1, H, W, 3) tensor per ModelInfer call; batches and compute from Triton's stats."""

    def __init__(self, address: str, model: str, pixels: np.ndarray) -> None:
        from tritonclient.grpc import aio as triton_aio

        self.client = triton_aio.InferenceServerClient(address)
        self.model = model
        self.inputs = [triton_aio.InferInput("image", [1, *pixels.shape], "UINT8")]
        self.inputs[0].set_data_from_numpy(pixels[None])
        self.outputs = [triton_aio.InferRequestedOutput("translated")]
        self.shape = (1, *pixels.shape)
        # PyTriton guards the statistics endpoint with a token (see pytriton_server.py).
        token = os.environ.get("PYTRITON_ACCESS_TOKEN", "")
        self.headers = {"triton-grpc-protocol-triton-access-token": token}

    async def send(self) -> None:
        result = await self.client.infer(
            self.model, self.inputs, outputs=self.outputs, client_timeout=60
        )
        if result.as_numpy("translated").shape != self.shape:
            raise RuntimeError(f"reply has shape {result.as_numpy('translated').shape}")

    async def counts(self) -> Counts:
        reply = await self.client.get_inference_statistics(self.model, headers=self.headers)
        stats = reply.model_stats[0]
        # inference_stats add a batch's compute once per request; batch_stats once per batch.
        compute = sum(b.compute_infer.ns for b in stats.batch_stats) / 1e9
        return stats.inference_count, stats.execution_count, compute

    async def close(self) -> None:
        await self.client.close()


class V2Client(TritonClient):
    """TritonClient against i2i's ModelInfer; batches and compute from i2i's metrics.

    i2i-serve has no statistics extension; its Prometheus histograms of batch sizes and
    compute times give the same three numbers (their _sum and _count, all labels added).
    """

    def __init__(self, address: str, model: str, pixels: np.ndarray, metrics_url: str) -> None:
        super().__init__(address, model, pixels)
        self.metrics_url = metrics_url

    async def counts(self) -> Counts:
        text = await asyncio.to_thread(self._scrape)
        total: dict[str, float] = {}
        for line in text.splitlines():
            match = SUMMED.match(line)
            if match:
                total[match[1]] = total.get(match[1], 0.0) + float(line.rsplit(" ", 1)[1])
        return (
            total.get("i2i_inference_batch_size_sum", 0.0),
            total.get("i2i_inference_batch_size_count", 0.0),
            total.get("i2i_inference_compute_duration_seconds_sum", 0.0),
        )

    def _scrape(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=10) as response:
            return str(response.read().decode())


async def closed_loop(
    send: Callable[[], Awaitable[None]],
    counts: Callable[[], Awaitable[Counts]],
    concurrency: int,
    duration: float,
    warmup: float,
    server_pid: int | None = None,
) -> dict[str, Any]:
    """`concurrency` workers send, await the reply, send again; stats of the timed window.

    Throughput counts the replies that arrived inside the window, latencies are theirs;
    batches, compute and CPU are the differences between the window's two ends.
    """
    done: list[tuple[float, float]] = []
    errors: dict[str, int] = {}
    stop = asyncio.Event()

    async def worker() -> None:
        while not stop.is_set():
            start = time.perf_counter()
            try:
                await send()
            except Exception as exc:  # grpc and tritonclient raise their own types
                key = f"{type(exc).__name__}: {str(exc)[:80]}"
                errors[key] = errors.get(key, 0) + 1
                await asyncio.sleep(0.01)
                continue
            done.append((start, time.perf_counter()))

    tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
    await asyncio.sleep(warmup)
    before = await counts()
    cpu0, t0 = (time.process_time(), process_tree_cpu(server_pid)), time.perf_counter()
    await asyncio.sleep(duration)
    cpu1, t1 = (time.process_time(), process_tree_cpu(server_pid)), time.perf_counter()
    after = await counts()
    stop.set()
    await asyncio.gather(*tasks)
    latencies = np.array([(e - s) * 1e3 for s, e in done if t0 <= e <= t1])
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99]) if len(latencies) else [np.nan] * 3
    requests, batches, compute = (a - b for a, b in zip(after, before, strict=True))
    return {
        "concurrency": concurrency,
        "images_per_s": len(latencies) / (t1 - t0),
        "p50_ms": float(p50),
        "p95_ms": float(p95),
        "p99_ms": float(p99),
        "mean_batch": requests / batches if batches else float("nan"),
        "compute_ms_per_batch": compute / batches * 1e3 if batches else float("nan"),
        "server_cores": (cpu1[1] - cpu0[1]) / (t1 - t0),
        "client_cores": (cpu1[0] - cpu0[0]) / (t1 - t0),
        "errors": errors,
    }


def test_image(size: int) -> np.ndarray:
    """A fixed random RGB image, uint8 (size, size, 3)."""
    return np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)


async def run_client(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Client mode: the concurrency sweep against one running server."""
    pixels = test_image(args.size)
    client: I2IClient | TritonClient
    if args.target == "i2i":
        client = I2IClient(args.address, args.model, args.direction, pixels)
    elif args.target == "v2":
        model = v2_model_name(args.model, args.direction)
        client = V2Client(args.address, model, pixels, args.metrics_url)
    else:
        client = TritonClient(args.address, v2_model_name(args.model, args.direction), pixels)
    try:
        await client.send()  # fails at once on a wrong address or model name
        points = []
        for c in args.concurrency:
            point = await closed_loop(
                client.send, client.counts, c, args.duration, args.warmup, args.server_pid
            )
            points.append(point)
        return points
    finally:
        await client.close()


def onnx_file(repository: Path, model: str, direction: str) -> Path:
    """The FP32 ONNX artifact of one direction of the model's latest version."""
    from i2i.repository import read_manifest

    manifest = read_manifest(repository, model)
    wanted = (direction, "onnx", "fp32")
    for artifact in manifest["artifacts"]:
        if (artifact["direction"], artifact["format"], artifact["precision"]) == wanted:
            return repository / model / str(manifest["version"]) / artifact["file"]
    raise SystemExit(f"{repository}/{model}: no FP32 ONNX artifact for {direction}; export one")


def raw_throughput(onnx: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """images/s of an ONNX Runtime session built as i2i's CPU backend builds it."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(str(onnx), options, providers=["CPUExecutionProvider"])
    results = []
    for n in sorted({1, args.max_batch}):
        images = np.repeat(test_image(args.size)[None], n, axis=0)
        for _ in range(3):
            session.run(None, {"image": images})
        runs, start = 0, time.perf_counter()
        while runs < 5 or time.perf_counter() - start < args.raw_seconds:
            session.run(None, {"image": images})
            runs += 1
        seconds = time.perf_counter() - start
        per_s = n * runs / seconds
        results.append({"batch": n, "ms_per_batch": seconds / runs * 1e3, "images_per_s": per_s})
    return results


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_command(
    target: str, args: argparse.Namespace, onnx: Path, port: int, metrics_port: int
) -> list[str]:  # fmt: skip
    max_batch = 1 if target.endswith("-nobatch") else args.max_batch
    knobs = ["--max-batch", str(max_batch), "--max-delay-ms", str(args.max_delay_ms)]
    knobs += ["--threads", str(args.threads)]
    if target.startswith("i2i"):
        return [
            sys.executable, "-m", "i2i.serving", "--repository", str(args.repository),
            "--model", args.model, "--host", "127.0.0.1", "--port", str(port),
            "--metrics-port", str(metrics_port), "--max-queue", str(args.max_queue),
            "--warmup-size", str(args.size), "--log-level", "INFO", *knobs,
            "--backend", "onnxruntime-cpu", "--precision", "fp32",  # what the others run
        ]  # fmt: skip
    return [
        args.pytriton_python, str(Path(__file__).with_name("pytriton_server.py")),
        "--onnx", str(onnx), "--model", v2_model_name(args.model, args.direction),
        "--grpc-port", str(port),
        "--http-port", str(free_port()), *knobs,
    ]  # fmt: skip


def start_server(command: list[str], log_path: Path, timeout: float = 180) -> subprocess.Popen:
    """Start a server process; return once its log says SERVING (or raise with the log's end)."""
    with log_path.open("wb") as log_file:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if READY.search(log_path.read_text(errors="replace")):
            return process
        time.sleep(0.2)
    stop_server(process)
    tail = log_path.read_text(errors="replace")[-3000:]
    status = "timed out" if process.returncode == -signal.SIGTERM else f"exit {process.returncode}"
    raise RuntimeError(f"{' '.join(command[:2])} did not reach SERVING ({status}); log:\n{tail}")


def stop_server(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start_target(
    target: str, args: argparse.Namespace, onnx: Path, logs: Path
) -> tuple[subprocess.Popen, int, int]:  # fmt: skip
    """Start the target's server; (its process, its port, its metrics port or -1)."""
    port = free_port()
    metrics_port = free_port() if target == "i2i-v2" else -1  # its load generator reads it
    os.environ.setdefault("PYTRITON_ACCESS_TOKEN", secrets.token_urlsafe(24))  # both children
    command = server_command(target, args, onnx, port, metrics_port)
    return start_server(command, logs / f"{target}.log"), port, metrics_port


def run_point(
    target: str, server: tuple[subprocess.Popen, int, int], concurrency: int,
    args: argparse.Namespace, logs: Path,
) -> dict[str, Any]:  # fmt: skip
    """One closed-loop point against a running server, by the load generator in its own process."""
    process, port, metrics_port = server
    kind = "v2" if target == "i2i-v2" else "i2i" if target.startswith("i2i") else "pytriton"
    client = [
        sys.executable if kind == "i2i" else args.pytriton_python, str(Path(__file__).resolve()),
        "--target", kind, "--address", f"127.0.0.1:{port}", "--server-pid", str(process.pid),
        "--model", args.model, "--direction", args.direction, "--size", str(args.size),
        "--concurrency", str(concurrency),
        "--duration", str(args.duration), "--warmup", str(args.warmup),
    ]  # fmt: skip
    if kind == "v2":
        client += ["--metrics-url", f"http://127.0.0.1:{metrics_port}/metrics"]
    client_log = logs / f"{target}.client.log"
    with client_log.open("ab") as stderr:
        done = subprocess.run(client, stdout=subprocess.PIPE, stderr=stderr, check=False)
    if done.returncode != 0:
        tail = client_log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"the load generator against {target} failed:\n{tail}")
    return {"target": target, **json.loads(done.stdout)[0]}


def pytriton_versions(python: str) -> dict[str, str]:
    """The package versions of the PyTriton venv, asked of its own interpreter."""
    done = subprocess.run(
        [python, str(Path(__file__).with_name("machine.py")), "--json", "--packages",
         ",".join(PYTRITON_PACKAGES)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return dict(json.loads(done.stdout)["versions"])


def summarise(raw: list[dict], load: list[dict], max_batch: int) -> dict[str, Any]:
    """Best throughput against the raw ceiling of the same round; ratios at equal concurrency."""
    ceiling = {(r["round"], r["batch"]): r["images_per_s"] for r in raw}
    overhead = {}
    for target, batch in (("i2i", max_batch), ("i2i-nobatch", 1), ("i2i-v2", max_batch)):
        points = [p for p in load if p["target"] == target]
        if points:
            best = max(points, key=lambda p: p["images_per_s"])
            raw_now = ceiling[best["concurrency"], batch]
            overhead[target] = {
                "best_images_per_s": best["images_per_s"],
                "at_concurrency": best["concurrency"],
                "raw_batch": batch,
                "raw_images_per_s": raw_now,
                "fraction_of_raw": best["images_per_s"] / raw_now,
            }
    by_key = {(p["target"], p["concurrency"]): p for p in load}
    pairs = (
        ("i2i", "i2i-nobatch"), ("i2i", "pytriton"), ("i2i-nobatch", "pytriton-nobatch"),
        ("i2i-v2", "pytriton"), ("i2i-v2", "i2i"),
    )  # fmt: skip
    versus = [
        {"a": ours, "b": theirs, "concurrency": c,
         "throughput_ratio": p["images_per_s"] / by_key[theirs, c]["images_per_s"],
         "p99_ratio": p["p99_ms"] / by_key[theirs, c]["p99_ms"]}
        for ours, theirs in pairs
        for (target, c), p in by_key.items() if target == ours and (theirs, c) in by_key
    ]  # fmt: skip
    return {"overhead": overhead, "versus": versus}


def table(header: str, rows: list[str]) -> list[str]:
    columns = header.count("|") - 1
    return ["", header, "|---" + "|---:" * (columns - 1) + "|", *rows]


def markdown(results: dict[str, Any]) -> str:
    m, s = results["machine"], results["settings"]
    lines = [describe(m), ""]
    if "pytriton_venv" in m:
        venv = ", ".join(f"{k} {v}" for k, v in m["pytriton_venv"].items())
        lines += [f"PyTriton's venv (its servers and load generator): {venv}.", ""]
    lines += [
        f"{s['model']} {s['direction']} ({s['onnx']}), {s['size']}x{s['size']} images, "
        f"{s['threads']} intra-op thread(s), max batch {s['max_batch']}, max delay "
        f"{s['max_delay_ms']} ms; {s['duration']} s per point after {s['warmup']} s warm-up. "
        "All servers run for the whole sweep; each concurrency is one round: the raw session, "
        "then every target in turn. 1-minute load average "
        f"{results['load_average'][0]:.2f} before, {results['load_average'][1]:.2f} after "
        '(it counts the benchmark\'s own threads); "idle servers" are the cores the other '
        'targets\' servers used while waiting for their turn, "others" the cores that '
        "processes other than the benchmark, its servers and its load generators used "
        "during a point.",
    ]
    lines += table(
        "| raw ONNX Runtime session, same settings | batch | ms/batch | images/s | others |",
        [f"| round C={r['round']} | {r['batch']} | {r['ms_per_batch']:.2f} "
         f"| {r['images_per_s']:.0f} | {r['others_cores']:.2f} |" for r in results["raw"]],
    )  # fmt: skip
    lines += table(
        "| target | C | images/s | p50 ms | p95 ms | p99 ms | mean batch | compute ms/batch "
        "| server / client cores | idle servers | others | errors |",
        [f"| {p['target']} | {p['concurrency']} | {p['images_per_s']:.0f} | {p['p50_ms']:.1f} "
         f"| {p['p95_ms']:.1f} | {p['p99_ms']:.1f} | {p['mean_batch']:.2f} "
         f"| {p['compute_ms_per_batch']:.2f} | {p['server_cores']:.2f} / {p['client_cores']:.2f} "
         f"| {p['idle_servers_cores']:.2f} | {p['others_cores']:.2f} "
         f"| {sum(p['errors'].values())} |"
         for p in sorted(results["load"], key=lambda p: (p["target"], p["concurrency"]))],
    )  # fmt: skip
    if results["summary"]["overhead"]:
        lines += table(
            "| server | best images/s (at C) | raw images/s (batch), same round | fraction of raw |",
            [f"| {t} | {o['best_images_per_s']:.0f} ({o['at_concurrency']}) "
             f"| {o['raw_images_per_s']:.0f} ({o['raw_batch']}) | {o['fraction_of_raw']:.1%} |"
             for t, o in results["summary"]["overhead"].items()],
        )  # fmt: skip
    if results["summary"]["versus"]:
        lines += table(
            "| targets, same round | C | throughput ratio | p99 ratio |",
            [f"| {v['a']} / {v['b']} | {v['concurrency']} "
             f"| {v['throughput_ratio']:.2f} | {v['p99_ratio']:.2f} |"
             for v in results["summary"]["versus"]],
        )  # fmt: skip
    for target, error in results["failed"].items():
        lines += ["", f"{target} failed: {error.splitlines()[0]} (the log's end is on stderr)"]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = p.add_argument
    add("--repository", type=Path, help="serve this repository (default: export a tiny model)")
    add("--model", default="tiny", help="the model's name in --repository (default tiny)")
    add("--direction", default="A2B", help="the direction to load (default A2B)")
    add("--ngf", type=int, default=4, help="width of the exported generator; tiny, so the "
        "server's own overhead dominates (default 4)")  # fmt: skip
    add("--size", type=int, default=64, help="image height and width in pixels (default 64)")
    add("--threads", type=int, default=1, help="ONNX Runtime intra-op threads of the raw "
        "session and of both servers (default 1)")  # fmt: skip
    add("--max-batch", type=int, default=8, help="largest batch of batching targets (default 8)")
    add("--max-delay-ms", type=float, default=2.0, help="batchers' max delay (default 2)")
    add("--max-queue", type=int, default=256, help="i2i's queue bound (default 256)")
    add("--concurrency", type=lambda t: [int(c) for c in t.split(",")],
        default=[1, 2, 4, 8, 16, 32, 64], help="workers per point (default 1,...,64)")  # fmt: skip
    add("--duration", type=float, default=5.0, help="timed seconds per point (default 5)")
    add("--warmup", type=float, default=1.0, help="untimed seconds before each point (default 1)")
    add("--raw-seconds", type=float, default=2.0, help="seconds per raw batch size and round "
        "(default 2)")  # fmt: skip
    add("--targets", default=",".join(TARGETS), help="comma-separated (default "
        "%(default)s); i2i-v2 and the PyTriton ones run only with --pytriton-python")  # fmt: skip
    add("--pytriton-python", default=os.environ.get("I2I_PYTRITON_PYTHON"), help="python "
        "of a venv with nvidia-pytriton, onnxruntime, numpy (or $I2I_PYTRITON_PYTHON)")  # fmt: skip
    add("--quick", action="store_true", help="concurrency 1,8,64, 2 s per point")
    add("--json", type=Path, help="also write the results here")
    add("--keep", type=Path, help="write the exported model and the servers' logs here")
    add("--target", choices=("i2i", "v2", "pytriton"), help=argparse.SUPPRESS)  # client mode
    add("--metrics-url", help=argparse.SUPPRESS)
    add("--address", help=argparse.SUPPRESS)
    add("--server-pid", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.concurrency, args.duration, args.warmup, args.raw_seconds = [1, 8, 64], 2.0, 0.5, 1.0
    unknown = set(args.targets.split(",")) - set(TARGETS)
    if unknown:
        p.error(f"--targets: unknown {', '.join(sorted(unknown))}; choose from {TARGETS}")
    return args


def main() -> None:
    args = parse_args()
    if args.target:  # client mode: the sweep as JSON on stdout
        print(json.dumps(asyncio.run(run_client(args))))
        return
    targets = args.targets.split(",")
    if not args.pytriton_python and any(t in TRITONCLIENT_TARGETS for t in targets):
        print("i2i-v2 and PyTriton targets skipped: pass --pytriton-python", file=sys.stderr)
        targets = [t for t in targets if t not in TRITONCLIENT_TARGETS]
    work = args.keep or Path(tempfile.mkdtemp(prefix="i2i-serve-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.repository is None:
        args.repository = export_untrained(
            work / "export", "tiny", ngf=args.ngf, ndf=4, net="resnet_6blocks"
        )
        args.model = "tiny"
    onnx = onnx_file(args.repository, args.model, args.direction)
    ident = identity({"onnxruntime intra-op (raw session and servers)": args.threads})
    print(describe(ident), file=sys.stderr, flush=True)
    if any(t in TRITONCLIENT_TARGETS for t in targets):  # the other venv's own versions
        ident["pytriton_venv"] = pytriton_versions(args.pytriton_python)
    started, load_before = time.monotonic(), load_average()
    servers: dict[str, tuple[subprocess.Popen, int, int]] = {}
    raw, load, failed = [], [], {}
    try:
        for target in targets:
            print(f"starting {target} ...", file=sys.stderr, flush=True)
            try:
                servers[target] = start_target(target, args, onnx, work)
            except RuntimeError as exc:  # a server that cannot start here: say why, go on
                print(f"{target} failed: {exc}", file=sys.stderr)
                failed[target] = str(exc)
        pids = tuple(server[0].pid for server in servers.values())
        for c in args.concurrency:  # one round: the raw ceiling, then every target
            print(f"round C={c} ...", file=sys.stderr, flush=True)
            before = cpu_snapshot(pids)
            points = raw_throughput(onnx, args)
            others = others_cores(before, cpu_snapshot(pids))["others_cores"]
            raw += [{"round": c, **r, "others_cores": others} for r in points]
            for target, server in list(servers.items()):
                idle = [s[0].pid for t, s in servers.items() if t != target]
                point_load, before = load_average(), cpu_snapshot(pids)
                idle_before, started_at = sum(map(process_tree_cpu, idle)), time.monotonic()
                try:
                    point = run_point(target, server, c, args, work)
                except RuntimeError as exc:
                    print(f"{target} failed: {exc}", file=sys.stderr)
                    failed[target] = str(exc)
                    stop_server(servers.pop(target)[0])
                    continue
                seen = others_cores(before, cpu_snapshot(pids))
                idle_cores = (sum(map(process_tree_cpu, idle)) - idle_before) / (
                    time.monotonic() - started_at
                )  # the servers waiting for their turn: they should cost ~0
                load.append(point | {"load_average": point_load, "idle_servers_cores": idle_cores}
                            | seen)  # fmt: skip
    finally:
        for server in servers.values():
            stop_server(server[0])
    hidden = ("target", "address", "server_pid", "metrics_url", "json", "keep")
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    results = {
        "machine": ident,
        "load_average": [load_before, load_average()],
        "settings": {k: v for k, v in settings.items() if k not in hidden}
        | {"onnx": onnx.name, "targets": targets},
        "raw": raw,
        "load": load,
        "failed": failed,
        "summary": summarise(raw, load, args.max_batch),
        "seconds": time.monotonic() - started,
    }
    print(markdown(results))
    print(f"(logs in {work}; {results['seconds']:.0f} s)", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
