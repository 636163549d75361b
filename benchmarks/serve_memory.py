"""Server memory under large images: peak and settled RSS of `i2i-serve` for bursts of
concurrent 2048x2048 requests, with and without the per-batch pixel bound and the ONNX
Runtime arena shrinkage.

    python benchmarks/serve_memory.py                  # ResNet-9, ngf 8: a few minutes
    python benchmarks/serve_memory.py --ngf 64         # the full-width generator (slow on CPUs)
    python benchmarks/serve_memory.py --repository REPO --model NAME

An untrained CycleGAN generator (ResNet-9 by default) is exported to ONNX in a temporary
repository, then for each configuration a real `i2i-serve` process (ONNX Runtime on the
CPU) is started and sent bursts of 1, 4 and 8 concurrent raw --size x --size requests. A
thread samples the server's resident memory (VmRSS in /proc/<pid>/status) every 10 ms:

- idle: after start-up and warm-up, before the first burst;
- peak: the highest sample of the burst (VmHWM agrees with it to a sample's resolution);
- settled: --settle seconds after the burst's last reply.

Configurations (--configs):

- ``before``: --max-batch-pixels 0 (no bound) and I2I_ORT_CPU_ARENA=keep: the server as it
  was before the bound and the shrinkage existed;
- ``bound``: the default --max-batch-pixels, arena kept;
- ``shrink``: no bound, arena shrinkage;
- ``after``: the defaults (bound and shrinkage);
- ``off``: the default bound, no arena at all (I2I_ORT_CPU_ARENA=off).

Then (unless --throughput-requests is 0) the cost of the arena modes in speed: one server
each for keep, shrink and off, all up at once; for each of --throughput-sizes,
--throughput-rounds rounds in which each server in turn gets --throughput-requests images
from a closed loop of --throughput-concurrency clients; images/s over its rounds. Shrink
gives memory back only after runs above ``SHRINK_ABOVE_PIXELS`` (8 x 256²), so the default
sizes are one on each side of it.

Memory grows with the generator's width: the activations of a ResNet generator are about
``ngf`` channels of float32 per pixel at full resolution, so bytes per pixel scale roughly
linearly with ``ngf`` (and compute with its square). The report gives bytes per pixel at
the peak, so the numbers carry over to other widths.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from exported import export_untrained
from machine import describe, identity

CONFIGS: dict[str, tuple[bool, str]] = {  # name: (bounded, arena)
    "before": (False, "keep"),
    "bound": (True, "keep"),
    "shrink": (False, "shrink"),
    "after": (True, "shrink"),
    "off": (True, "off"),
}
MB = 1 << 20


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MiB, from /proc (Linux)."""
    text = Path(f"/proc/{pid}/status").read_text()
    found = {k: int(v) / 1024 for k, v in re.findall(r"(VmRSS|VmHWM):\s+(\d+) kB", text)}
    return found["VmRSS"], found["VmHWM"]


class Sampler:
    """Samples a process's VmRSS every `interval` seconds in a thread; keeps the maximum."""

    def __init__(self, pid: int, interval: float = 0.01) -> None:
        self.pid, self.interval = pid, interval
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb(self.pid)[0])
            time.sleep(self.interval)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb(self.pid)[0])


@dataclass
class Server:
    process: Any  # i2i.serving.process.ServerProcess
    pid: int
    target: str


@contextmanager
def serving(args: argparse.Namespace, bounded: bool, arena: str, log: Path) -> Iterator[Server]:
    """A real `i2i-serve` on 127.0.0.1 with this configuration, stopped on exit."""
    from i2i.serving.process import ServerProcess

    flags = [
        "--model", args.model, "--backend", "onnxruntime-cpu", "--metrics-port", "-1",
        "--warmup-size", "64", "--max-batch", str(args.max_batch),
        "--max-delay-ms", str(args.max_delay_ms), "--max-message-mb", "64",
        "--drain-delay-s", "0",
    ]  # fmt: skip
    if args.threads:
        flags += ["--threads", str(args.threads)]
    if not bounded:
        flags += ["--max-batch-pixels", "0"]
    elif args.max_batch_pixels:
        flags += ["--max-batch-pixels", str(args.max_batch_pixels)]
    env = {"I2I_ORT_CPU_ARENA": arena}
    server = ServerProcess(args.repository, *flags, env=env, start_timeout=600).start()
    assert server.process is not None
    try:
        yield Server(server, server.process.pid, server.target)
    finally:
        server.stop()
        log.write_text("".join(server.log))


def stub_for(target: str) -> Any:
    import grpc

    from i2i.v1 import translator_pb2_grpc as pb_grpc

    options = [
        ("grpc.max_send_message_length", 64 * MB),
        ("grpc.max_receive_message_length", 64 * MB),
    ]
    return pb_grpc.TranslatorStub(grpc.insecure_channel(target, options=options))


def request(args: argparse.Namespace, size: int, seed: int) -> Any:
    from i2i.v1 import translator_pb2 as pb

    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    raw = pb.RawImage(pixels=pixels.tobytes(), height=size, width=size, channels=3)
    return pb.TranslateRequest(
        model=args.model,
        direction=args.direction,
        image=pb.Image(raw=raw),
        output=pb.OutputOptions(format=pb.IMAGE_FORMAT_RAW),
    )


def burst(server: Server, args: argparse.Namespace, concurrency: int) -> dict[str, Any]:
    """`concurrency` requests at once; RSS at the peak and after --settle seconds."""
    stub = stub_for(server.target)
    messages = [request(args, args.size, seed) for seed in range(concurrency)]
    before = rss_mb(server.pid)[0]
    gate = threading.Barrier(concurrency)

    def send(message: Any) -> int:
        gate.wait()
        reply = stub.Translate(message, timeout=3600)
        return int(reply.batch_size)

    start = time.monotonic()
    with Sampler(server.pid) as sampler, ThreadPoolExecutor(concurrency) as pool:
        batches = list(pool.map(send, messages))
    seconds = time.monotonic() - start
    del messages
    time.sleep(args.settle)
    settled, hwm = rss_mb(server.pid)
    return {
        "concurrency": concurrency,
        "batch_sizes": sorted(batches, reverse=True),
        "seconds": seconds,
        "before_mb": before,
        "peak_mb": sampler.peak,
        "hwm_mb": hwm,
        "settled_mb": settled,
    }


def closed_loop(server: Server, args: argparse.Namespace, size: int, requests: int) -> float:
    """Seconds for --throughput-concurrency clients to get `requests` replies in all."""
    stub = stub_for(server.target)
    message = request(args, size, 0)
    clients = args.throughput_concurrency
    counter = iter(range(requests))
    lock = threading.Lock()

    def loop() -> None:
        while True:
            with lock:
                if next(counter, None) is None:
                    return
            stub.Translate(message, timeout=3600)

    start = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(loop) for _ in range(clients)]:
            future.result()
    return time.monotonic() - start


def speed(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    """Images/s per arena mode and size: one server per mode, all up at once, and rounds
    that take turns between them, so a shared machine's changing load hits each alike."""
    modes = ("keep", "shrink", "off")
    rounds = args.throughput_rounds
    seconds = {(mode, size): 0.0 for mode in modes for size in args.throughput_sizes}
    with ExitStack() as stack:
        servers = {
            mode: stack.enter_context(serving(args, True, mode, work / f"server-speed-{mode}.log"))
            for mode in modes
        }
        for size in args.throughput_sizes:
            for mode in modes:  # warm: the first run of a size allocates
                closed_loop(servers[mode], args, size, args.throughput_concurrency)
            for _ in range(rounds):
                for mode in modes:
                    seconds[mode, size] += closed_loop(
                        servers[mode], args, size, args.throughput_requests
                    )
        time.sleep(args.settle)
        settled = {mode: rss_mb(server.pid)[0] for mode, server in servers.items()}
    points = [
        {
            "arena": mode,
            "size": size,
            "images_per_s": rounds * args.throughput_requests / seconds[mode, size],
            "settled_mb": settled[mode],
        }
        for (mode, size) in seconds
    ]
    for point in points:
        print(json.dumps(point), file=sys.stderr, flush=True)
    return points


def markdown(results: dict[str, Any]) -> str:
    m, s = results["machine"], results["settings"]
    pixels = s["size"] * s["size"]
    lines = [
        describe(m),
        "",
        f"Command: `{results['command']}`",
        "",
        f"Model: {s['model_description']}. Server: ONNX Runtime CPU, max batch "
        f"{s['max_batch']}, max delay {s['max_delay_ms']} ms, default --max-batch-pixels "
        f"{s['default_max_batch_pixels']}. Requests: raw {s['size']}x{s['size']} RGB in and "
        f"out; RSS settled {s['settle']} s after a burst's last reply.",
        "",
        "| config | bound | arena | concurrent | batch sizes | burst s | before MB "
        "| peak MB | settled MB | peak B/px of the largest batch |",
        "|---|---|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for point in results["memory"]:
        largest = max(point["batch_sizes"]) if point["batch_sizes"] else 1
        per_pixel = (point["peak_mb"] - point["idle_mb"]) * MB / (largest * pixels)
        lines.append(
            f"| {point['config']} | {point['bound']} | {point['arena']} | "
            f"{point['concurrency']} | {'+'.join(map(str, point['batches']))} | "
            f"{point['seconds']:.1f} | {point['before_mb']:.0f} | {point['peak_mb']:.0f} | "
            f"{point['settled_mb']:.0f} | {per_pixel:.0f} |"
        )
    lines.append("")
    lines.append("Idle RSS after start-up: " + ", ".join(
        f"{name} {mb:.0f} MB" for name, mb in results["idle"].items()
    ))  # fmt: skip
    if results["throughput"]:
        lines += [
            "",
            f"Arena cost in speed: {s['throughput_rounds']} rounds of "
            f"{s['throughput_requests']} raw requests per mode and size from "
            f"{s['throughput_concurrency']} closed-loop clients, the modes' servers taking "
            "turns; default bound; settled RSS at the end.",
            "",
            "| arena | size | images/s | settled MB |",
            "|---|---:|---:|---:|",
        ]
        for point in results["throughput"]:
            lines.append(
                f"| {point['arena']} | {point['size']} | {point['images_per_s']:.2f} "
                f"| {point['settled_mb']:.0f} |"
            )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = p.add_argument
    add("--repository", type=Path, help="serve this repository (default: export a model)")
    add("--model", default="bench", help="the model's name in --repository")
    add("--direction", default="A2B", help="the direction to send to (default A2B)")
    add("--ngf", type=int, default=8, help="width of the exported generator (default 8)")
    add("--generator", default="resnet_9blocks", help="netG of the exported generator")
    add("--size", type=int, default=2048, help="image height and width (default 2048)")
    add("--concurrency", type=lambda t: [int(c) for c in t.split(",")], default=[1, 4, 8],
        help="requests per burst (default 1,4,8)")  # fmt: skip
    add("--configs", default="before,after", help="comma-separated, from "
        f"{', '.join(CONFIGS)} (default %(default)s)")  # fmt: skip
    add("--max-batch", type=int, default=8, help="the servers' --max-batch (default 8)")
    add("--max-delay-ms", type=float, default=5.0, help="the servers' --max-delay-ms")
    add("--max-batch-pixels", type=int, default=None, help="the bound of bounded configs "
        "(default: the server's default)")  # fmt: skip
    add("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    add("--settle", type=float, default=3.0, help="seconds after a burst before 'settled'")
    add("--throughput-sizes", type=lambda t: [int(c) for c in t.split(",")],
        default=[256, 1024], help="image sizes of the speed loop (default 256,1024)")  # fmt: skip
    add("--throughput-requests", type=int, default=8, help="requests of each round of the "
        "speed loop, per arena mode and size (0: skip the speed loop)")  # fmt: skip
    add("--throughput-rounds", type=int, default=4, help="rounds of the speed loop")
    add("--throughput-concurrency", type=int, default=4, help="clients of the speed loop")
    add("--json", type=Path, help="also write the results here")
    add("--markdown", type=Path, help="also write the markdown table here")
    add("--keep", type=Path, help="write the exported model and the servers' logs here")
    args = p.parse_args(argv)
    args.configs = [name for name in args.configs.split(",") if name]  # "": speed only
    unknown = set(args.configs) - set(CONFIGS)
    if unknown:
        p.error(f"--configs: unknown {', '.join(sorted(unknown))}; choose from {list(CONFIGS)}")
    return args


def main() -> None:
    args = parse_args()
    from i2i.serving.config import ServerConfig

    if not Path("/proc/self/status").exists():
        sys.exit("this benchmark reads /proc/<pid>/status: it runs on Linux only")
    default_bound = ServerConfig(repository=Path(".")).max_batch_pixels
    work = args.keep or Path(tempfile.mkdtemp(prefix="i2i-serve-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.repository is None:
        print(f"exporting {args.generator} ngf {args.ngf} ...", file=sys.stderr, flush=True)
        args.repository = export_untrained(
            work / "export", "bench", ngf=args.ngf, ndf=4, net=args.generator
        )
        args.model = "bench"
        description = f"untrained CycleGAN {args.generator}, ngf {args.ngf}, FP32 ONNX"
    else:
        description = f"{args.model} from {args.repository}"
    threads = {"onnxruntime intra-op (servers)": args.threads} if args.threads else None
    info = identity(threads)
    memory, idle = [], {}
    for name in args.configs:
        bounded, arena = CONFIGS[name]
        bound = (args.max_batch_pixels or default_bound) if bounded else 0
        print(f"{name}: bound {bound or 'none'}, arena {arena}", file=sys.stderr, flush=True)
        with serving(args, bounded, arena, work / f"server-{name}.log") as server:
            time.sleep(1.0)
            idle[name] = rss_mb(server.pid)[0]
            for concurrency in args.concurrency:
                point = burst(server, args, concurrency)
                point |= {"config": name, "bound": bound or "none", "arena": arena,
                          "idle_mb": idle[name], "batches": batches_of(point["batch_sizes"])}  # fmt: skip
                print(json.dumps(point), file=sys.stderr, flush=True)
                memory.append(point)
    speeds = speed(args, work) if args.throughput_requests else []
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    settings |= {"model_description": description, "default_max_batch_pixels": default_bound}
    results = {
        "machine": info,
        "settings": settings,
        "idle": idle,
        "memory": memory,
        "throughput": speeds,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    text = markdown(results)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if args.markdown:
        args.markdown.write_text(text + "\n")


def batches_of(sizes: list[int]) -> list[int]:
    """The batches a burst formed, from each reply's batch size (a batch of n answers n)."""
    batches, left = [], sorted(sizes, reverse=True)
    while left:
        size = left[0]
        batches.append(size)
        left = left[size:]
    return batches


if __name__ == "__main__":
    main()
